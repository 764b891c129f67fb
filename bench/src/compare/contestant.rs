//! One contestant of a comparison: a lab built for it, its gateway started, every point run.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::Duration;

use egw_testbed::topology::{GW_INSIDE_IF, GW_OUTSIDE_ADDRESS, POD_CIDR};
use egw_testbed::{Gateway, LabConfig, Testbed};

use crate::compare::egw::EgwProcess;
use crate::compare::host::sysctl_read;
use crate::compare::limits::BASELINE_WINDOW;
use crate::compare::plan::{bypass_route_table, conntrack_needed, planned_points, strip_ansi};
use crate::compare::point::Point;
use crate::cpu::CpuSample;
use crate::results::{step, CompareError, CompareSettings, Contestant, PointResult, PointStatus};

fn lab_for(settings: &CompareSettings, workers: u32) -> Result<Testbed, CompareError> {
    let mut config = LabConfig::new(workers as usize, settings.bench_bin.clone())?;
    // One gateway worker per veth queue.
    config.gateway_queues = u16::try_from(workers).unwrap_or(u16::MAX);
    Ok(Testbed::build(config)?)
}

fn read_in(lab: &Testbed, namespace: &str, path: &str) -> Result<String, CompareError> {
    Ok(lab
        .run_in(
            namespace,
            "cat",
            &[path.to_owned()],
            Duration::from_secs(20),
        )?
        .stdout
        .trim()
        .to_owned())
}

fn offload_state(lab: &Testbed, namespace: &str, device: &str) -> String {
    lab.run_in(
        namespace,
        "ethtool",
        &["-k".to_owned(), device.to_owned()],
        Duration::from_secs(20),
    )
    .map(|output| {
        output
            .stdout
            .lines()
            .filter(|line| {
                line.starts_with("generic-receive-offload") || line.starts_with("rx-gro-list")
            })
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_else(|error| format!("unknown ({error})"))
}

/// Builds a lab, starts `contestant`, runs every point.
pub(crate) fn run_contestant(
    settings: &CompareSettings,
    contestant: Contestant,
    workers: u32,
    gateway_bin: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<Vec<PointResult>, CompareError> {
    if settings.progress {
        eprintln!("egw-bench: {} with {workers} worker(s)", contestant.label());
    }
    let mut lab = lab_for(settings, workers)?;
    let expected: Vec<Ipv4Addr> = match contestant {
        Contestant::Ceiling => lab.config().pods.iter().map(|pod| pod.address).collect(),
        _ => lab
            .config()
            .pods
            .iter()
            .map(|pod| lab.config().pool_address(&pod.pool))
            .collect::<Result<_, _>>()?,
    };
    let mut egw = match contestant {
        Contestant::Kernel => {
            start_kernel(&mut lab, settings, notes)?;
            None
        }
        Contestant::Egw | Contestant::Ceiling => {
            let binary = gateway_bin.ok_or_else(|| step("egw-gateway", "binary not found"))?;
            Some(start_egw(
                &lab, settings, contestant, workers, binary, notes,
            )?)
        }
    };
    let gw = lab.gateway_namespace();
    let gateway_mac = read_in(&lab, &gw, &format!("/sys/class/net/{GW_INSIDE_IF}/address"))?;
    let baseline = {
        let before = CpuSample::now()?;
        thread::sleep(BASELINE_WINDOW);
        CpuSample::now()?.since(&before).utilisation()
    };
    let mut results = Vec::new();
    for (index, (kind, flows, frame_len)) in planned_points(settings, contestant, workers)
        .into_iter()
        .enumerate()
    {
        if let Some(process) = egw.as_mut() {
            process.check_alive()?;
        }
        let point = Point {
            lab: &lab,
            settings,
            contestant,
            workers,
            kind,
            flows,
            frame_len,
            index,
            expected: &expected,
            gateway_mac: &gateway_mac,
            baseline,
            gateway_pid: egw.as_ref().map(|process| process.child.id()),
        };
        let result = run_point(&point, egw.as_ref());
        if settings.progress {
            report_progress(contestant, &result);
        }
        results.push(result);
    }
    drop(egw);
    lab.teardown()?;
    Ok(results)
}

/// The kernel contestant: nftables SNAT, conntrack sized for the sweep (as far as the host
/// allows); notes what it got.
fn start_kernel(
    lab: &mut Testbed,
    settings: &CompareSettings,
    notes: &mut Vec<String>,
) -> Result<(), CompareError> {
    let gw = lab.gateway_namespace();
    lab.start_gateway(Gateway::Kernel)?;
    let needed = conntrack_needed(settings);
    let host_max = sysctl_read("net.netfilter.nf_conntrack_max").unwrap_or(needed);
    let wanted = needed.min(host_max);
    let set = lab.run_in(
        &gw,
        "sysctl",
        &[
            "-q".to_owned(),
            "-w".to_owned(),
            format!("net.netfilter.nf_conntrack_max={wanted}"),
        ],
        Duration::from_secs(20),
    );
    let actual = read_in(lab, &gw, "/proc/sys/net/netfilter/nf_conntrack_max").unwrap_or_default();
    let buckets =
        read_in(lab, &gw, "/proc/sys/net/netfilter/nf_conntrack_buckets").unwrap_or_default();
    notes.push(format!(
        "kernel: gateway namespace nf_conntrack_max={actual} (wanted {needed}{}), buckets={buckets}; GRO gw-in: {}; gw-out: {}",
        set.err().map(|error| format!("; setting failed: {error}")).unwrap_or_default(),
        offload_state(lab, &gw, GW_INSIDE_IF),
        offload_state(lab, &gw, "gw-out"),
    ));
    Ok(())
}

/// The egw and ceiling contestants: egw-gateway with the lab's table (egw) or one that
/// bypasses everything (ceiling, which also needs a route back to the pods); notes its set-up.
fn start_egw(
    lab: &Testbed,
    settings: &CompareSettings,
    contestant: Contestant,
    workers: u32,
    binary: &Path,
    notes: &mut Vec<String>,
) -> Result<EgwProcess, CompareError> {
    let table = (contestant == Contestant::Ceiling).then(bypass_route_table);
    if contestant == Contestant::Ceiling {
        lab.run_in(
            &lab.inet_namespace(),
            "ip",
            &[
                "route",
                "add",
                POD_CIDR,
                "via",
                &GW_OUTSIDE_ADDRESS.to_string(),
            ]
            .map(str::to_owned),
            Duration::from_secs(20),
        )?;
    }
    let capacity = conntrack_needed(settings);
    let process = EgwProcess::start(lab, binary, workers, capacity, table)?;
    notes.push(format!(
        "{}: egw-gateway workers={workers}, conntrack capacity_per_core={capacity}, route table {}; GRO gw-in: {}",
        contestant.label(),
        process.table_path.display(),
        offload_state(lab, &lab.gateway_namespace(), GW_INSIDE_IF)
    ));
    Ok(process)
}

/// Runs one point; a point that fails becomes a failed result (with egw-gateway's log tail)
/// instead of ending the contestant.
fn run_point(point: &Point<'_>, egw: Option<&EgwProcess>) -> PointResult {
    let mut result = point.run().unwrap_or_else(|error| {
        let mut failed = PointResult::skipped(
            point.contestant,
            point.workers,
            point.kind,
            point.flows,
            point.frame_len,
            PointStatus::Failed,
            &error.to_string(),
        );
        failed.baseline_utilisation = point.baseline;
        failed
    });
    if result.status == PointStatus::Failed {
        if let Some(process) = egw {
            result.note = format!(
                "{}; egw-gateway log tail: {}",
                result.note,
                strip_ansi(&process.child.log_tail(1500))
            );
        }
    }
    result
}

/// One line on stderr per finished point.
fn report_progress(contestant: Contestant, result: &PointResult) {
    eprintln!(
        "egw-bench: {:<7} {:?} flows={:<8} size={:<5} -> {:.0}/s delivered, loss {:.2}%, cpu {} ns/unit{}",
        contestant.label(),
        result.kind,
        result.flows,
        result.frame_len,
        result.delivered_per_s,
        result.loss_fraction * 100.0,
        result.cpu_ns_per_unit_attributed.map_or("-".to_owned(), |ns| format!("{ns:.0}")),
        if result.note.is_empty() { String::new() } else { format!(" ({})", result.note) }
    );
}
