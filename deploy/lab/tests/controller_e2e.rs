//! Kubernetes intent to packets, with egw-controller in local mode driving the lab's
//! egw-gateway: annotations and CRDs in YAML files → route table over gRPC → real packets seen by
//! the mirror. Editing a file changes a pod's egress IP; deleting the referenced policy makes
//! that pod's egress fail closed.
//!
//! Needs root and built egw-gateway, egwctl and egw-controller (next to the test binary's target
//! directory, as `cargo test --workspace` builds them, or via EGW_GATEWAY_BIN / EGWCTL_BIN /
//! EGW_CONTROLLER_BIN). Fails, never skips, without them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use egw_lab::{controller, gateway, topology, Gateway, Lab, LabConfig};

fn lab() -> Lab {
    if let Err(error) = topology::require_root() {
        panic!("these end-to-end tests build network namespaces and must run as root: {error}");
    }
    let binary = gateway::find_gateway_binary(None)
        .unwrap_or_else(|error| panic!("egw-gateway is needed (cargo build --workspace): {error}"));
    let config =
        LabConfig::new(3, PathBuf::from(env!("CARGO_BIN_EXE_egw-lab"))).expect("lab config");
    Lab::up(config, Gateway::Egw { binary })
        .unwrap_or_else(|error| panic!("building the lab: {error}"))
}

const EXT_1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const EXT_2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

#[test]
fn annotations_and_crds_drive_the_egress_ip_and_fail_closed() {
    let mut lab = lab();
    lab.start_controller(&[EXT_1])
        .expect("controller pushes its first table");

    // pod-a: namespace team-a annotated with the gateway; pod-b: team-b with the policy;
    // pod-c: team-c, no egress intent — denied by default, never the node's address.
    assert_eq!(
        lab.probe_tcp("pod-a").expect("pod-a tcp").ip(),
        IpAddr::V4(EXT_1)
    );
    assert_eq!(
        lab.probe_udp("pod-b").expect("pod-b udp").ip(),
        IpAddr::V4(EXT_1)
    );
    assert!(
        lab.probe_udp("pod-c").is_err(),
        "a pod without intent gets no egress through the gateway"
    );
    assert_eq!(
        lab.expected_egress_from_table("pod-a").expect("table"),
        Ok(vec![EXT_1])
    );

    // An operator edits the EgressGateway: its address changes; new connections follow.
    let generation = lab.served_generation().expect("generation");
    lab.edit_gateway_addresses(&[EXT_2]).expect("edit");
    lab.wait_for_generation_above(generation)
        .expect("controller pushed the edit");
    assert_eq!(
        lab.probe_tcp("pod-a").expect("pod-a after edit").ip(),
        IpAddr::V4(EXT_2)
    );
    assert_eq!(
        lab.probe_udp("pod-b").expect("pod-b after edit").ip(),
        IpAddr::V4(EXT_2)
    );

    // Deleting the policy pod-b's namespace names: pod-b fails closed, pod-a is unaffected.
    let generation = lab.served_generation().expect("generation");
    std::fs::remove_file(lab.manifest_dir().join(controller::POLICY_FILE)).expect("delete policy");
    lab.wait_for_generation_above(generation)
        .expect("controller pushed the deletion");
    match lab.expected_egress_from_table("pod-b").expect("table") {
        Err(reason) => assert!(
            reason.contains(controller::LAB_POLICY),
            "reason names the policy: {reason}"
        ),
        Ok(addresses) => panic!("pod-b should be denied, table says {addresses:?}"),
    }
    assert!(
        lab.probe_udp("pod-b").is_err(),
        "pod-b's egress fails closed"
    );
    assert_eq!(
        lab.probe_udp("pod-a").expect("pod-a still").ip(),
        IpAddr::V4(EXT_2)
    );
}
