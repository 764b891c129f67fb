//! `egw-bench compare`: one lab per contestant, the same load through each, one after another.
//!
//! Contestants:
//! - `egw`: egw-gateway with the lab's SNAT route table;
//! - `kernel`: Linux forwarding + nftables SNAT + conntrack, conntrack sized for the flow count;
//! - `ceiling`: egw-gateway with a route table that bypasses (forwards without NAT) everything:
//!   the same AF_XDP path with no NAT work, i.e. what the I/O alone allows here. The internet
//!   namespace gets a route back to the pod CIDR for it.
//!
//! Each point: the receiver starts in the internet namespace, the generators (one per worker,
//! each in its own pod) run for the point's duration, and `/proc/stat` is sampled around them.

mod contestant;
mod egw;
mod host;
pub mod limits;
pub mod plan;
mod point;

use std::time::Instant;

use egw_testbed::find_gateway_binary;

pub use crate::results::*;
pub use limits::CPS_PORT;
pub use plan::{bypass_route_table, strip_ansi};

use contestant::run_contestant;
use host::{restore_stale_host_conntrack, HostConntrack};
use plan::{conntrack_needed, planned_points};

/// Runs every contestant and writes the results into `settings.out_dir`.
pub fn run(settings: &CompareSettings) -> Result<(CompareReport, Outputs), CompareError> {
    settings.validate()?;
    let started = Instant::now();
    let gateway_bin = find_gateway_binary(settings.gateway_bin.as_deref()).ok();
    let mut notes = Vec::new();
    let mut points = Vec::new();
    if let Some(note) = restore_stale_host_conntrack() {
        notes.push(note);
    }
    let _host_conntrack =
        if settings.contestants.contains(&Contestant::Kernel) && settings.tune_host_conntrack {
            HostConntrack::raise(conntrack_needed(settings), &mut notes)
        } else {
            None
        };
    for &workers in &settings.workers {
        for &contestant in &settings.contestants {
            let needs_egw = contestant != Contestant::Kernel;
            match (&gateway_bin, needs_egw) {
                (None, true) => {
                    points.extend(planned_points(settings, contestant, workers).into_iter().map(
                        |(kind, flows, frame_len)| {
                            PointResult::skipped(contestant, workers, kind, flows, frame_len, PointStatus::NotRun, "egw-gateway binary not found (--gateway-bin / EGW_GATEWAY_BIN)")
                        },
                    ));
                }
                (binary, _) => {
                    match run_contestant(
                        settings,
                        contestant,
                        workers,
                        binary.as_deref(),
                        &mut notes,
                    ) {
                        Ok(mut results) => points.append(&mut results),
                        Err(error) => {
                            let note = strip_ansi(&format!("{}: {error}", contestant.label()));
                            eprintln!("egw-bench: {note}");
                            points.extend(
                                planned_points(settings, contestant, workers)
                                    .into_iter()
                                    .map(|(kind, flows, frame_len)| {
                                        PointResult::skipped(
                                            contestant,
                                            workers,
                                            kind,
                                            flows,
                                            frame_len,
                                            PointStatus::Failed,
                                            &note,
                                        )
                                    }),
                            );
                        }
                    }
                }
            }
        }
    }
    let report = CompareReport {
        date: today(),
        machine: MachineInfo::collect(),
        settings: settings.clone(),
        gateway_bin: gateway_bin.map(|path| path.display().to_string()),
        notes,
        points,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let outputs = crate::report::write_all(&report, &settings.out_dir)?;
    Ok((report, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
    }

    #[test]
    fn bypass_table_routes_the_pod_cidr_without_nat() {
        let table = bypass_route_table();
        assert!(table.contains("bypass: true"));
        assert!(table.contains("cidr: 10.244.0.0/16"));
        assert!(!table.contains("snat"));
    }

    #[test]
    fn quick_profile_is_short_and_points_are_planned_per_contestant() {
        let settings =
            CompareSettings::for_profile(Profile::Quick, PathBuf::from("/x"), PathBuf::from("/y"));
        assert!(
            settings.estimated_seconds() <= 180,
            "{}",
            settings.estimated_seconds()
        );
        let kernel = planned_points(&settings, Contestant::Kernel, 1);
        assert_eq!(kernel.len(), 5);
        assert_eq!(kernel[0].0, LoadKind::Cps);
        // Every point's destination ports fit below 65536 with room for 1 M flows.
        let needed = crate::generate::FlowPlan::new(1_000_000, 1024, 0)
            .unwrap()
            .destination_ports;
        assert!(needed < PORTS_PER_POINT);
        assert!(FIRST_DESTINATION_PORT + PORTS_PER_POINT * (MAX_POINTS as u32 + 1) < 65_536);
        let mut too_many = settings.clone();
        too_many.flows = vec![MAX_FLOWS + 1];
        assert!(too_many.validate().is_err());
        too_many.flows = (1..=300).collect();
        assert!(too_many.validate().is_err());
        // No return path for TCP when nothing is translated: the ceiling runs UDP only.
        assert_eq!(planned_points(&settings, Contestant::Ceiling, 1).len(), 4);
        let full =
            CompareSettings::for_profile(Profile::Full, PathBuf::from("/x"), PathBuf::from("/y"));
        assert_eq!(planned_points(&full, Contestant::Egw, 1).len(), 10);
        assert_eq!(conntrack_needed(&full), (3 * 1_101_000 + 500_000) * 5 / 4);
    }

    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2mINFO\u{1b}[0m ok \u{1b}[3mx\u{1b}[0m=1"),
            "INFO ok x=1"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn contestants_parse_by_label() {
        for contestant in Contestant::ALL {
            assert_eq!(Contestant::parse(contestant.label()), Some(contestant));
        }
        assert_eq!(Contestant::parse("nginx"), None);
    }
}
