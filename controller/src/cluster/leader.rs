//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas are safe: only the
//! holder pushes tables and writes status, Events and finalizers.
//!
//! The holder renews every [`LeaseOptions::renew_interval`]; another replica takes the Lease over
//! only once `renewTime + leaseDurationSeconds` has passed. Every write carries the
//! `resourceVersion` it read (optimistic concurrency), so two replicas racing for an expired
//! Lease cannot both win: the loser gets 409 Conflict and stays a follower. A holder that fails
//! to renew steps down before the Lease can expire (it stops leading after
//! `lease_duration - renew_interval` without a successful renewal), so two leaders never act at
//! once as long as clocks agree within that margin.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::Api;

/// Where and as whom to hold the Lease.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

impl LeaseOptions {
    pub fn new(namespace: String, identity: String) -> LeaseOptions {
        LeaseOptions {
            namespace,
            name: "egw-controller".to_owned(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
        }
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    options: LeaseOptions,
    /// When this replica last acquired or renewed the Lease.
    renewed_at: Option<Instant>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, options: LeaseOptions) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &options.namespace),
            options,
            renewed_at: None,
        }
    }

    pub fn options(&self) -> &LeaseOptions {
        &self.options
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.options.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.options.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One election round: acquires, renews or observes the Lease. Returns whether this replica
    /// leads now. An API error keeps leadership only while the last renewal is fresh enough.
    pub async fn try_acquire_or_renew(&mut self, now: Timestamp) -> Result<bool, kube::Error> {
        match self.round(now).await {
            Ok(leading) => {
                self.renewed_at = leading.then(Instant::now);
                Ok(leading)
            }
            Err(error) => {
                let margin = self
                    .options
                    .lease_duration
                    .saturating_sub(self.options.renew_interval);
                if self
                    .renewed_at
                    .is_some_and(|renewed| renewed.elapsed() >= margin)
                {
                    self.renewed_at = None;
                }
                Err(error)
            }
        }
    }

    /// Whether this replica may act as leader right now.
    pub fn is_leader(&self) -> bool {
        let margin = self
            .options
            .lease_duration
            .saturating_sub(self.options.renew_interval);
        self.renewed_at
            .is_some_and(|renewed| renewed.elapsed() < margin)
    }

    /// Gives the Lease up if this replica holds it (on shutdown), so another replica takes over
    /// at its next round instead of waiting for the Lease to expire.
    pub async fn release(&mut self, now: Timestamp) -> Result<(), kube::Error> {
        self.renewed_at = None;
        let Some(mut lease) = self.api.get_opt(&self.options.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.options.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(&self.options.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(identity = %self.options.identity, "released the leader Lease");
                Ok(())
            }
            // Someone else wrote it meanwhile: it is not ours to release any more.
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn round(&mut self, now: Timestamp) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.options.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.options.name.clone()),
                    namespace: Some(self.options.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(identity = %self.options.identity, "acquired the leader Lease");
                    Ok(true)
                }
                Err(kube::Error::Api(status))
                    if status.is_already_exists() || status.is_conflict() =>
                {
                    Ok(false)
                }
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == self.options.identity {
            let acquired = spec.acquire_time.map_or(now, |time| time.0);
            self.spec(now, acquired, transitions)
        } else {
            let duration = spec
                .lease_duration_seconds
                .unwrap_or(self.duration_seconds());
            let expired = match spec.renew_time.or(spec.acquire_time) {
                Some(renewed) => renewed.0 + SignedDuration::from_secs(i64::from(duration)) < now,
                None => true,
            };
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            tracing::info!(
                identity = %self.options.identity,
                previous = %holder,
                "taking over the expired leader Lease"
            );
            self.spec(now, now, transitions.saturating_add(1))
        };
        lease.spec = Some(new_spec);
        // `replace` sends the resourceVersion read above: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.options.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(error) => Err(error),
        }
    }
}
