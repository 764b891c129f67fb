//! Needs root: creates real namespaces and a veth pair, sends one datagram across it, and checks
//! that dropping the guards removes everything.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use egw_netns::link::{self, End};
use egw_netns::{in_netns, namespace, Netns};

#[test]
fn veth_pair_carries_a_datagram_and_drop_removes_the_namespaces() {
    let (a, b) = (
        Netns::unique("egwn-a").unwrap(),
        Netns::unique("egwn-b").unwrap(),
    );
    assert_ne!(a.name(), b.name());
    link::add_veth(
        End {
            namespace: a.name(),
            name: "va",
        },
        End {
            namespace: b.name(),
            name: "vb",
        },
        Some(2),
    )
    .unwrap();
    link::add_address(a.name(), "va", "10.99.0.1/24").unwrap();
    link::add_address(b.name(), "vb", "10.99.0.2/24").unwrap();
    link::set_up(a.name(), "va").unwrap();
    link::set_up(b.name(), "vb").unwrap();
    assert!(a
        .ip(&["-d", "link", "show", "dev", "va"])
        .unwrap()
        .contains("numtxqueues 2"));
    let mac = link::mac(b.name(), "vb").unwrap();
    assert_ne!(mac, [0; 6]);

    let receiver = in_netns(b.name(), || {
        let socket = UdpSocket::bind((Ipv4Addr::new(10, 99, 0, 2), 9999)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    })
    .unwrap();
    in_netns(a.name(), || {
        UdpSocket::bind((Ipv4Addr::new(10, 99, 0, 1), 0))
            .unwrap()
            .send_to(b"hello", (Ipv4Addr::new(10, 99, 0, 2), 9999))
            .unwrap();
    })
    .unwrap();
    let mut buf = [0u8; 16];
    let (len, from) = receiver.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"hello");
    assert_eq!(from.ip(), Ipv4Addr::new(10, 99, 0, 1));

    let names = [a.name().to_owned(), b.name().to_owned()];
    a.delete().unwrap();
    drop(b);
    let left = namespace::list().unwrap();
    for name in &names {
        assert!(!left.contains(name), "{name} survived");
    }
}

#[test]
fn entering_a_missing_namespace_is_an_error() {
    assert!(in_netns("egwn-does-not-exist", || ()).is_err());
}
