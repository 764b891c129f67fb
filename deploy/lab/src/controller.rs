//! Kubernetes-style intent in the lab: `egw-controller --local DIR` reads EgressGateway,
//! EgressGatewayPolicy, Namespace and Pod manifests from a directory, compiles the route table
//! and pushes it to the lab's egw-gateway over gRPC. Editing the files changes the packets.
//!
//! The lab also answers "what egress should this pod have?" from the table the gateway actually
//! serves (fetched with `egwctl routes get`), compiled with the NAT engine's own route table, so
//! the demo checks annotation → route table → packets end to end.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use egw_policy::Decision;
use egw_proto::yaml;

use egw_testbed::gateway::write_atomically;
use egw_testbed::{LabConfig, LabError, Result};

/// Environment variable naming the egw-controller binary.
pub const CONTROLLER_BIN_ENV: &str = "EGW_CONTROLLER_BIN";

/// The EgressGateway the lab's manifests define; its single static instance is the lab gateway.
pub const LAB_GATEWAY: &str = "lab";
/// The EgressGatewayPolicy the lab's manifests define.
pub const LAB_POLICY: &str = "partner";
pub const GATEWAY_FILE: &str = "gateway.yaml";
pub const POLICY_FILE: &str = "policy.yaml";
pub const WORKLOADS_FILE: &str = "workloads.yaml";

/// egw-controller: the one next to the gateway binary, else `EGW_CONTROLLER_BIN`.
pub fn find_controller_binary(gateway_binary: &Path) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = gateway_binary.parent() {
        candidates.push(dir.join("egw-controller"));
    }
    if let Some(path) = std::env::var_os(CONTROLLER_BIN_ENV).filter(|value| !value.is_empty()) {
        candidates.push(PathBuf::from(path));
    }
    candidates.iter().find(|path| path.is_file()).cloned().ok_or_else(|| {
        LabError::Config(format!(
            "egw-controller not found (looked at {candidates:?}); build it (cargo build -p egw-controller) or set {CONTROLLER_BIN_ENV}"
        ))
    })
}

/// The namespace the lab puts a pod in: alternately one annotated with the gateway and one
/// annotated with the policy, and every third pod in a namespace without egress intent.
pub fn namespace_of(pod_index: usize) -> &'static str {
    match pod_index % 3 {
        0 => "team-a",
        1 => "team-b",
        _ => "team-c",
    }
}

/// The EgressGateway manifest: one static instance (the lab gateway) with `addresses`.
pub fn gateway_manifest(control_socket: &Path, addresses: &[Ipv4Addr]) -> String {
    let list: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
    format!(
        "apiVersion: egw.dev/v1alpha1\nkind: EgressGateway\nmetadata:\n  name: {LAB_GATEWAY}\nspec:\n  selector:\n    matchLabels:\n      egw.dev/gateway: {LAB_GATEWAY}\n  static:\n    instances:\n      - name: lab-gw-0\n        endpoint: unix://{}\n        addresses: [{}]\n",
        control_socket.display(),
        list.join(", ")
    )
}

/// The policy team-b uses: the lab's internet through the lab gateway.
pub fn policy_manifest() -> String {
    format!(
        "apiVersion: egw.dev/v1alpha1\nkind: EgressGatewayPolicy\nmetadata:\n  name: {LAB_POLICY}\nspec:\n  rules:\n    - destination:\n        cidr: 203.0.113.0/24\n      gateway:\n        name: {LAB_GATEWAY}\n      description: the partner's network allow-lists the lab gateway\n"
    )
}

/// Namespaces (team-a: gateway annotation, team-b: policy annotation, team-c: none) and a Pod
/// object for every lab pod.
pub fn workloads_manifest(config: &LabConfig) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  annotations:\n    egw.dev/gateway: {LAB_GATEWAY}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-b\n  annotations:\n    egw.dev/policy: {LAB_POLICY}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-c\n"
    );
    for (index, pod) in config.pods.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  containers: [{{name: app, image: lab}}]\nstatus:\n  phase: Running\n  podIP: {}\n  podIPs: [{{ip: {}}}]\n",
            pod.name,
            namespace_of(index),
            pod.address,
            pod.address
        ));
    }
    out
}

/// Writes the three manifest files into `dir`.
pub fn write_manifests(
    dir: &Path,
    config: &LabConfig,
    control_socket: &Path,
    addresses: &[Ipv4Addr],
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|source| LabError::io(format!("creating {}", dir.display()), source))?;
    write_atomically(
        &dir.join(GATEWAY_FILE),
        &gateway_manifest(control_socket, addresses),
    )?;
    write_atomically(&dir.join(POLICY_FILE), &policy_manifest())?;
    write_atomically(&dir.join(WORKLOADS_FILE), &workloads_manifest(config))?;
    Ok(())
}

/// What a route table (as the gateway serves it, YAML from `egwctl routes get -o yaml`) does with
/// new flows from `pod` to `destination`: the addresses its egress may use (one for a paired
/// pool), or `Err(reason)` when it is denied. Computed with the engine's own compiled table.
pub fn expected_egress(
    table_yaml: &str,
    pod: Ipv4Addr,
    destination: Ipv4Addr,
) -> Result<std::result::Result<Vec<Ipv4Addr>, String>> {
    let table = yaml::RouteTableDocument::from_yaml_str(table_yaml)
        .map_err(|e| LabError::Config(format!("the gateway's route table does not parse: {e}")))?;
    let compiled = egw_proto::spec::compile(&table.to_proto()).map_err(|e| {
        LabError::Config(format!("the gateway's route table does not compile: {e}"))
    })?;
    Ok(match compiled.lookup(pod, destination) {
        Decision::Snat(id) => {
            let pool = compiled.pool(id);
            if pool.pairing() {
                Ok(pool.select(pod, 0, |_| true).into_iter().collect())
            } else {
                Ok(pool.addresses().to_vec())
            }
        }
        Decision::Bypass => Ok(vec![pod]),
        Decision::Deny(id) => Err(compiled.deny_reason(id).to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_egress_follows_the_table() {
        let table = "generation: 3\npools:\n  - { name: p, addresses: [198.51.100.1, 198.51.100.2] }\npolicies:\n  - name: x\n    rules:\n      - { destination: 0.0.0.0/0, snat: p }\n      - { destination: 192.0.2.0/24, deny: blocked }\nsources:\n  - { cidr: 10.244.1.10/32, policy: x }\n";
        let pod = Ipv4Addr::new(10, 244, 1, 10);
        let mirror = Ipv4Addr::new(203, 0, 113, 10);
        let ok = expected_egress(table, pod, mirror).unwrap().unwrap();
        assert_eq!(ok.len(), 1, "paired pool: one address");
        assert!(ok[0] == Ipv4Addr::new(198, 51, 100, 1) || ok[0] == Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(
            expected_egress(table, pod, Ipv4Addr::new(192, 0, 2, 1)).unwrap(),
            Err("blocked".to_owned())
        );
        assert!(
            expected_egress(table, Ipv4Addr::new(10, 244, 9, 9), mirror)
                .unwrap()
                .is_err(),
            "unknown source denied"
        );
    }

    #[test]
    fn manifests_name_the_lab_gateway_socket_and_every_pod() {
        let config = LabConfig::new(3, PathBuf::from("/nonexistent/egw-lab")).unwrap();
        let g = gateway_manifest(
            Path::new("/tmp/lab/egw.sock"),
            &[Ipv4Addr::new(198, 51, 100, 1)],
        );
        assert!(
            g.contains("endpoint: unix:///tmp/lab/egw.sock")
                && g.contains("addresses: [198.51.100.1]"),
            "{g}"
        );
        let w = workloads_manifest(&config);
        for pod in &config.pods {
            assert!(w.contains(&format!("podIP: {}", pod.address)), "{w}");
        }
        assert!(w.contains("namespace: team-c"));
    }
}
