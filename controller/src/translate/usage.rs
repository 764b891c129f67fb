//! Who uses a policy or gateway: pods and namespaces collected while translating, reported as
//! counts with a bounded sorted sample.

use std::collections::BTreeSet;

use super::output::Usage;
use crate::input::PodInfo;

/// Most pods and namespaces listed in a usage sample.
pub const SAMPLE_LIMIT: usize = 10;

/// The pods and namespaces that use one object so far.
#[derive(Default)]
pub(super) struct UsageBuilder {
    pods: BTreeSet<String>,
    namespaces: BTreeSet<String>,
}

impl UsageBuilder {
    pub(super) fn add(&mut self, pod: &PodInfo) {
        self.pods.insert(pod.key());
        self.namespaces.insert(pod.namespace.clone());
    }

    pub(super) fn finish(self) -> Usage {
        Usage {
            pods: self.pods.len(),
            namespaces: self.namespaces.len(),
            sample_pods: self.pods.into_iter().take(SAMPLE_LIMIT).collect(),
            sample_namespaces: self.namespaces.into_iter().take(SAMPLE_LIMIT).collect(),
        }
    }
}
