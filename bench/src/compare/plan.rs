//! Planning a comparison: which points each contestant runs, how big the tables must be, the
//! route table of the no-NAT ceiling, and log clean-up for notes.

use egw_testbed::topology::POD_CIDR;

use crate::results::{CompareSettings, Contestant, LoadKind};

pub(crate) fn planned_points(
    settings: &CompareSettings,
    contestant: Contestant,
    _workers: u32,
) -> Vec<(LoadKind, u32, usize)> {
    let mut planned = Vec::new();
    // Connections first: they then measure connection set-up on an empty table, not what a
    // million UDP flows left behind.
    if settings.cps && contestant != Contestant::Ceiling {
        planned.push((LoadKind::Cps, 0, 0));
    }
    for &flows in &settings.flows {
        for &frame_len in &settings.frame_sizes {
            planned.push((LoadKind::Udp, flows, frame_len));
        }
    }
    planned
}

/// Connections the CPS point may leave in the table (RST-closed ones linger a few seconds).
const CPS_TABLE_SLACK: u64 = 500_000;

/// Table size (kernel conntrack and egw alike) for the whole sweep: every point has its own
/// flows and UDP state outlives a point (30 s unreplied in conntrack, minutes in egw), so the
/// flows of all points plus the connections of the CPS point, with a quarter to spare.
pub(crate) fn conntrack_needed(settings: &CompareSettings) -> u64 {
    let flows: u64 = settings
        .flows
        .iter()
        .map(|&flows| u64::from(flows))
        .sum::<u64>()
        * settings.frame_sizes.len() as u64;
    let connections = if settings.cps { CPS_TABLE_SLACK } else { 0 };
    ((flows + connections) * 5 / 4).max(65_536)
}

pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A route table that forwards every pod's traffic unchanged: same AF_XDP path, no NAT.
pub fn bypass_route_table() -> String {
    format!(
        "generation: 1\npools: []\npolicies:\n- name: bypass-all\n  rules:\n  - destination: 0.0.0.0/0\n    bypass: true\nsources:\n- cidr: {POD_CIDR}\n  policy: bypass-all\n"
    )
}
