//! End-to-end tests on veth pairs inside test-created network namespaces.
//! Need root (CAP_NET_ADMIN + CAP_BPF), `ip`, `nsenter` and `bpftool`.
// unsafe: if_nametoindex(3) to check attachments by index. clippy.toml allows unwrap, expect and
// indexing in #[test] functions only; the helpers here are test code too, where a panic is a
// test failure.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod netns;

use std::net::UdpSocket;

use egw_xdp::xsk::{FrameSize, Side, TxStatus, Worker, WorkerConfig};
use egw_xdp::{query_xdp_attachment, AttachMode, InterfaceRole, InterfaceSpec, SteeringProgram};
use ipnet::Ipv4Net;
use netns::*;

fn small_config() -> WorkerConfig {
    WorkerConfig {
        frame_size: FrameSize::Bytes2048,
        frame_count: 512,
        ring_size: 128,
        ..WorkerConfig::default()
    }
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}

#[test]
fn attaches_in_native_mode_and_detaches() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut program = SteeringProgram::load().unwrap();
        let id = program.program_id().unwrap();
        let attached = program
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap();
        assert_eq!(attached.mode, AttachMode::Native);
        assert!(attached.bpf_link, "expected a BPF link attachment");

        let state = query_xdp_attachment(ifindex("gw0")).unwrap();
        assert_eq!(state.native_program_id, Some(id));
        let details = net.gw_link_details("gw0");
        assert!(details.contains(&format!("prog/xdp id {id}")), "{details}");

        program.detach("gw0").unwrap();
        assert!(query_xdp_attachment(ifindex("gw0")).unwrap().is_empty());
        assert!(!net.gw_link_details("gw0").contains("prog/xdp"));

        // Drop detaches too.
        program
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap();
        assert!(!query_xdp_attachment(ifindex("gw0")).unwrap().is_empty());
        drop(program);
        assert!(query_xdp_attachment(ifindex("gw0")).unwrap().is_empty());
    });
}

#[test]
fn leaked_bpf_link_is_replaced_on_restart() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut crashed = SteeringProgram::load().unwrap();
        let stale_id = crashed.program_id().unwrap();
        crashed
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap();
        // A run that never cleaned up: its link fd stays open.
        std::mem::forget(crashed);
        assert_eq!(
            query_xdp_attachment(ifindex("gw0"))
                .unwrap()
                .native_program_id,
            Some(stale_id)
        );

        let mut restarted = SteeringProgram::load().unwrap();
        let new_id = restarted.program_id().unwrap();
        let attached = restarted
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap();
        assert_eq!(attached.mode, AttachMode::Native);
        assert_eq!(
            query_xdp_attachment(ifindex("gw0"))
                .unwrap()
                .native_program_id,
            Some(new_id)
        );
        drop(restarted);
        assert!(query_xdp_attachment(ifindex("gw0")).unwrap().is_empty());
    });
}

#[test]
fn netlink_attached_program_is_replaced_on_restart() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut older = SteeringProgram::load().unwrap();
        let stale_id = older.program_id().unwrap();
        // An older run that attached through netlink (no BPF link): survives
        // its process.
        let netns_path = format!("--net=/run/netns/{}", net.gw);
        let stale_id_text = stale_id.to_string();
        run(&[
            "nsenter",
            &netns_path,
            "bpftool",
            "net",
            "attach",
            "xdpdrv",
            "id",
            &stale_id_text,
            "dev",
            "gw0",
        ]);
        drop(older);
        assert_eq!(
            query_xdp_attachment(ifindex("gw0"))
                .unwrap()
                .native_program_id,
            Some(stale_id),
            "netlink attachment must outlive its loader"
        );

        let mut restarted = SteeringProgram::load().unwrap();
        let new_id = restarted.program_id().unwrap();
        restarted
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap();
        assert_eq!(
            query_xdp_attachment(ifindex("gw0"))
                .unwrap()
                .native_program_id,
            Some(new_id)
        );
        drop(restarted);
        assert!(query_xdp_attachment(ifindex("gw0")).unwrap().is_empty());
    });
}

#[test]
fn pod_traffic_is_steered_to_af_xdp_only_when_its_cidr_is_configured() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut program = SteeringProgram::load().unwrap();
        program
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap();
        program.set_local_addrs(&[GW_INSIDE]).unwrap();
        let mut worker = Worker::one_armed("gw0", 0, &small_config()).unwrap();
        program
            .register_xsk("gw0", 0, &worker.socket_fd(Side::Inside))
            .unwrap();

        let kernel_socket = UdpSocket::bind((BEHIND_GW, 9000)).unwrap();
        let local_socket = UdpSocket::bind((GW_INSIDE, 9001)).unwrap();

        // No pod CIDR: the kernel gets the traffic.
        send_udp(&net.pod, POD, (BEHIND_GW, 9000), "kernel", 5);
        let got = recv_udp(&kernel_socket, 5);
        assert_eq!(got.len(), 5, "kernel received {got:?}");
        let stats = program.stats().unwrap();
        assert_eq!(stats.redirected_inside, 0);
        assert!(stats.passed >= 5, "{stats:?}");

        // Pod CIDR configured: the same flow goes to the AF_XDP socket.
        program
            .set_pod_cidrs(&["10.77.0.0/24".parse::<Ipv4Net>().unwrap()])
            .unwrap();
        send_udp(&net.pod, POD, (BEHIND_GW, 9000), "steered", 5);
        let frames = collect_rx(&mut worker, Side::Inside, 5);
        let mut payloads: Vec<String> = frames
            .iter()
            .filter_map(|f| udp_payload(f))
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        payloads.sort();
        assert_eq!(
            payloads,
            (0..5).map(|i| format!("steered-{i}")).collect::<Vec<_>>()
        );
        let stats = program.stats().unwrap();
        assert_eq!(stats.redirected_inside, 5, "{stats:?}");
        assert_eq!(worker.counters().rx, 5);

        // Gateway-local destinations stay with the kernel even from pods.
        send_udp(&net.pod, POD, (GW_INSIDE, 9001), "local", 3);
        assert_eq!(recv_udp(&local_socket, 3).len(), 3);
        assert!(program.stats().unwrap().passed_local_destination >= 3);

        // ARP and ICMP to the gateway keep working while attached.
        run(&["ip", "-n", &net.pod, "neigh", "flush", "dev", "pod0"]);
        run(&[
            "ip",
            "netns",
            "exec",
            &net.pod,
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "10.77.0.1",
        ]);
        assert!(
            program.stats().unwrap().passed_not_ipv4 >= 1,
            "ARP must be passed"
        );

        // Removing the CIDR hands the flow back to the kernel.
        program.set_pod_cidrs(&[]).unwrap();
        send_udp(&net.pod, POD, (BEHIND_GW, 9000), "again", 2);
        assert_eq!(recv_udp(&kernel_socket, 2).len(), 2);
    });
}

#[test]
fn snat_destinations_are_steered_on_the_outside_interface() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut program = SteeringProgram::load().unwrap();
        program
            .attach(&InterfaceSpec::new("gw1", InterfaceRole::Outside))
            .unwrap();
        let mut worker = Worker::one_armed("gw1", 0, &small_config()).unwrap();
        program
            .register_xsk("gw1", 0, &worker.socket_fd(Side::Outside))
            .unwrap();
        let kernel_socket = UdpSocket::bind((GW_OUTSIDE, 9200)).unwrap();

        send_udp(&net.ext, EXT, (GW_OUTSIDE, 9200), "before", 2);
        assert_eq!(recv_udp(&kernel_socket, 2).len(), 2);

        program.set_snat_addrs(&[GW_OUTSIDE]).unwrap();
        send_udp(&net.ext, EXT, (GW_OUTSIDE, 9200), "reply", 3);
        let frames = collect_rx(&mut worker, Side::Outside, 3);
        assert_eq!(
            frames.iter().filter(|f| udp_payload(f).is_some()).count(),
            3
        );
        assert_eq!(program.stats().unwrap().redirected_outside, 3);

        program.set_snat_addrs(&[]).unwrap();
        send_udp(&net.ext, EXT, (GW_OUTSIDE, 9200), "after", 2);
        assert_eq!(recv_udp(&kernel_socket, 2).len(), 2);
    });
}

#[test]
fn transmitted_frame_reaches_the_peer() {
    let net = TestNet::new();
    let gw_mac = net.mac(&net.gw, "gw0");
    let pod_mac = net.mac(&net.pod, "pod0");
    let pod_socket = in_netns(&net.pod, || UdpSocket::bind((POD, 9300)).unwrap());
    in_netns(&net.gw, || {
        let mut worker = Worker::one_armed("gw0", 0, &small_config()).unwrap();
        for i in 0..40 {
            let mut desc = worker.alloc_frame(Side::Inside).unwrap();
            let offset = desc.offset();
            let payload = format!("from-xsk-{i}");
            let frame = &mut worker.frame_mut(&desc)[offset..];
            let len = write_udp_frame(
                frame,
                (gw_mac, pod_mac),
                (GW_INSIDE, POD),
                (9301, 9300),
                payload.as_bytes(),
            );
            desc.set_packet(offset, len).unwrap();
            assert_eq!(worker.transmit(Side::Inside, desc), TxStatus::Queued);
        }
        worker.flush();
        let got = recv_udp(&pod_socket, 40);
        assert_eq!(got.len(), 40, "peer received {got:?}");
        assert!(got.contains(&"from-xsk-39".to_owned()));
        // Completed frames come back to the allocator.
        for _ in 0..50 {
            if worker.counters().tx_completed == 40 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            worker.flush();
        }
        assert_eq!(worker.counters().tx_completed, 40);
        assert_eq!(worker.counters().tx, 40);
    });
}

/// Receives pod frames on gw0's socket, rewrites them like a SNAT would
/// (addresses and MACs) and transmits them on gw1; `ext` must receive them.
fn forward_inside_to_outside(share_umem: bool) {
    let net = TestNet::new();
    let gw1_mac = net.mac(&net.gw, "gw1");
    let ext_mac = net.mac(&net.ext, "ext0");
    let ext_socket = in_netns(&net.ext, || UdpSocket::bind((EXT, 9400)).unwrap());
    in_netns(&net.gw, || {
        let mut program = SteeringProgram::load().unwrap();
        program
            .attach_all(&[
                InterfaceSpec::new("gw0", InterfaceRole::Inside),
                InterfaceSpec::new("gw1", InterfaceRole::Outside),
            ])
            .unwrap();
        program
            .set_pod_cidrs(&["10.77.0.0/24".parse::<Ipv4Net>().unwrap()])
            .unwrap();
        program.set_local_addrs(&[GW_INSIDE]).unwrap();
        let config = WorkerConfig {
            share_umem,
            ..small_config()
        };
        let mut worker = Worker::two_armed("gw0", "gw1", 0, &config).unwrap();
        assert_eq!(worker.socket_info(Side::Outside).shared_umem, share_umem);
        program
            .register_xsk("gw0", 0, &worker.socket_fd(Side::Inside))
            .unwrap();
        program
            .register_xsk("gw1", 0, &worker.socket_fd(Side::Outside))
            .unwrap();

        send_udp(&net.pod, POD, (BEHIND_GW, 9400), "fwd", 20);
        let mut batch = Vec::with_capacity(64);
        let mut forwarded = 0;
        let start = std::time::Instant::now();
        while forwarded < 20 && start.elapsed() < std::time::Duration::from_secs(5) {
            worker.wait(std::time::Duration::from_millis(100)).unwrap();
            worker.rx_batch(Side::Inside, &mut batch, 64);
            for mut desc in batch.drain(..) {
                let packet = worker.packet_mut(&desc);
                let Some(payload) = udp_payload(packet).map(<[u8]>::to_vec) else {
                    worker.recycle(desc);
                    continue;
                };
                let offset = desc.offset();
                let frame = &mut worker.frame_mut(&desc)[offset..];
                let len = write_udp_frame(
                    frame,
                    (gw1_mac, ext_mac),
                    (GW_OUTSIDE, EXT),
                    (40000, 9400),
                    &payload,
                );
                desc.set_packet(offset, len).unwrap();
                assert_eq!(worker.transmit(Side::Outside, desc), TxStatus::Queued);
                forwarded += 1;
            }
            worker.flush();
        }
        assert_eq!(forwarded, 20);
        let mut got = recv_udp(&ext_socket, 20);
        got.sort();
        let mut expected: Vec<String> = (0..20).map(|i| format!("fwd-{i}")).collect();
        expected.sort();
        assert_eq!(got, expected);
        let counters = worker.counters();
        if share_umem {
            assert_eq!(
                counters.tx_copied, 0,
                "shared UMEM must forward without copying"
            );
        } else {
            assert_eq!(counters.tx_copied, 20);
        }
    });
}

#[test]
fn forwards_between_interfaces_through_a_shared_umem() {
    forward_inside_to_outside(true);
}

#[test]
fn forwards_between_interfaces_with_separate_umems_by_copying() {
    forward_inside_to_outside(false);
}

#[test]
fn foreign_xdp_program_is_left_alone() {
    let net = TestNet::new();
    let netns_path = format!("--net=/run/netns/{}", net.gw);
    let output = std::process::Command::new("nsenter")
        .env("LIBXDP_SKIP_DISPATCHER", "1")
        .args([&netns_path, "xdp-loader", "load", "-m", "native", "gw0"])
        .arg(format!(
            "/usr/lib/{}-linux-gnu/bpf/xdpfilt_alw_all.o",
            std::env::consts::ARCH
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    in_netns(&net.gw, || {
        let before = query_xdp_attachment(ifindex("gw0")).unwrap();
        assert!(before.native_program_id.is_some());
        let mut program = SteeringProgram::load().unwrap();
        let error = program
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap_err();
        assert!(
            matches!(error, egw_xdp::LoaderError::ForeignProgram { ref program_name, .. } if program_name == "xdpfilt_alw_all"),
            "{error}"
        );
        assert_eq!(query_xdp_attachment(ifindex("gw0")).unwrap(), before);
    });
}

#[test]
fn steered_flow_without_a_registered_socket_reaches_the_kernel() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut program = SteeringProgram::load().unwrap();
        program
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap();
        program
            .set_pod_cidrs(&["10.77.0.0/24".parse::<Ipv4Net>().unwrap()])
            .unwrap();
        let kernel_socket = UdpSocket::bind((BEHIND_GW, 9500)).unwrap();
        send_udp(&net.pod, POD, (BEHIND_GW, 9500), "nosock", 3);
        assert_eq!(recv_udp(&kernel_socket, 3).len(), 3);
        let stats = program.stats().unwrap();
        assert_eq!(stats.redirect_failed, 3, "{stats:?}");
        assert_eq!(stats.redirected_inside, 0);
    });
}

/// Transmits raw `frames` from `pod0` through an AF_XDP socket in the pod
/// namespace (the only way to emit hand-made frames there without raw sockets).
fn inject_from_pod(net: &TestNet, frames: &[Vec<u8>]) {
    in_netns(&net.pod, || {
        let mut injector = Worker::one_armed("pod0", 0, &small_config()).unwrap();
        for bytes in frames {
            let mut desc = injector.alloc_frame(Side::Inside).unwrap();
            let offset = desc.offset();
            injector.frame_mut(&desc)[offset..offset + bytes.len()].copy_from_slice(bytes);
            desc.set_packet(offset, bytes.len()).unwrap();
            assert_eq!(injector.transmit(Side::Inside, desc), TxStatus::Queued);
        }
        injector.flush();
        assert_eq!(injector.counters().tx, frames.len() as u64);
    });
}

#[test]
fn vlan_tagged_and_malformed_frames_are_classified() {
    let net = TestNet::new();
    let gw_mac = net.mac(&net.gw, "gw0");
    let pod_mac = net.mac(&net.pod, "pod0");
    let tagged_pod = std::net::Ipv4Addr::new(10, 79, 0, 2);
    let tagged_target = std::net::Ipv4Addr::new(10, 79, 0, 1);

    let mut untagged = vec![0u8; 128];
    let len = write_udp_frame(
        &mut untagged,
        (pod_mac, gw_mac),
        (tagged_pod, tagged_target),
        (5000, 9600),
        b"tagged",
    );
    untagged.truncate(len);
    let mut tagged = untagged[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
    tagged.extend_from_slice(&untagged[12..]);
    // IPv4 ethertype, but the header is cut short.
    let mut truncated = untagged[..14 + 10].to_vec();
    truncated[14] = 0x45;

    in_netns(&net.gw, || {
        let mut program = SteeringProgram::load().unwrap();
        program
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::Inside))
            .unwrap();
        program
            .set_pod_cidrs(&["10.79.0.0/24".parse::<Ipv4Net>().unwrap()])
            .unwrap();
        let mut worker = Worker::one_armed("gw0", 0, &small_config()).unwrap();
        program
            .register_xsk("gw0", 0, &worker.socket_fd(Side::Inside))
            .unwrap();

        inject_from_pod(&net, &[tagged.clone(), tagged.clone(), truncated]);
        let frames = collect_rx(&mut worker, Side::Inside, 2);
        assert_eq!(frames, vec![tagged.clone(), tagged.clone()]);
        let stats = program.stats().unwrap();
        assert_eq!(stats.redirected_inside, 2, "{stats:?}");
        assert_eq!(stats.passed_malformed, 1, "{stats:?}");
    });
}

#[test]
#[should_panic(expected = "did not issue it")]
fn frames_cannot_be_used_with_another_worker() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut first = Worker::one_armed("gw0", 0, &small_config()).unwrap();
        let mut second = Worker::one_armed("gw1", 0, &small_config()).unwrap();
        let desc = first.alloc_frame(Side::Inside).unwrap();
        second.frame_mut(&desc);
    });
}

#[test]
fn falls_back_to_generic_mode_where_the_driver_has_no_native_xdp() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut program = SteeringProgram::load().unwrap();
        let id = program.program_id().unwrap();
        // The loopback driver has no native XDP support.
        let attached = program
            .attach(&InterfaceSpec::new("lo", InterfaceRole::Inside))
            .unwrap();
        assert_eq!(attached.mode, AttachMode::Generic);
        let state = query_xdp_attachment(ifindex("lo")).unwrap();
        assert_eq!(state.generic_program_id, Some(id));
        assert_eq!(state.native_program_id, None);
        assert_eq!(program.attachments(), vec![attached]);
        program.detach_all().unwrap();
        assert!(query_xdp_attachment(ifindex("lo")).unwrap().is_empty());
        assert!(program.attachments().is_empty());
    });
}

#[test]
fn one_armed_interface_steers_both_directions() {
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let mut program = SteeringProgram::load().unwrap();
        program
            .attach(&InterfaceSpec::new("gw0", InterfaceRole::OneArmed))
            .unwrap();
        let mut worker = Worker::one_armed("gw0", 0, &small_config()).unwrap();
        program
            .register_xsk("gw0", 0, &worker.socket_fd(Side::Inside))
            .unwrap();

        // Return traffic to a SNAT address arriving on the single arm.
        program.set_snat_addrs(&[BEHIND_GW]).unwrap();
        send_udp(&net.pod, POD, (BEHIND_GW, 9700), "to-snat", 2);
        assert_eq!(collect_rx(&mut worker, Side::Outside, 2).len(), 2);
        let stats = program.stats().unwrap();
        assert_eq!((stats.redirected_inside, stats.redirected_outside), (0, 2));

        // Pod-sourced traffic on the same arm counts as inside.
        program
            .set_pod_cidrs(&["10.77.0.0/24".parse::<Ipv4Net>().unwrap()])
            .unwrap();
        send_udp(&net.pod, POD, (BEHIND_GW, 9700), "from-pod", 2);
        assert_eq!(collect_rx(&mut worker, Side::Inside, 2).len(), 2);
        let stats = program.stats().unwrap();
        assert_eq!((stats.redirected_inside, stats.redirected_outside), (2, 2));
    });
}
