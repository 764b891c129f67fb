//! Renders a [`CompareReport`]: the JSON as is, a Markdown table with egw/kernel and
//! egw/ceiling ratios, and an SVG plot (hand-written: plotters' text rendering needs system
//! fonts through fontconfig, which a CI box may not have; SVG text needs none).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::results::{
    CompareError, CompareReport, Contestant, LoadKind, Outputs, PointResult, PointStatus,
};

/// Writes `<date>-<host>.{json,md,svg}` into `dir`.
pub fn write_all(report: &CompareReport, dir: &Path) -> Result<Outputs, CompareError> {
    write_files(report, dir, true)
}

/// Writes only the Markdown and SVG (the JSON stays as measured); returns all three paths.
pub fn write_rendered(report: &CompareReport, dir: &Path) -> Result<Outputs, CompareError> {
    write_files(report, dir, false)
}

fn write_files(
    report: &CompareReport,
    dir: &Path,
    with_json: bool,
) -> Result<Outputs, CompareError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CompareError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let host: String = report
        .machine
        .host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = format!(
        "{}-{}",
        report.date,
        if host.is_empty() { "host" } else { &host }
    );
    let outputs = Outputs {
        json: dir.join(format!("{stem}.json")),
        markdown: dir.join(format!("{stem}.md")),
        svg: dir.join(format!("{stem}.svg")),
    };
    if with_json {
        let json = serde_json::to_string_pretty(report).map_err(|error| CompareError::Step {
            what: "serialising results".to_owned(),
            detail: error.to_string(),
        })?;
        fs::write(&outputs.json, json + "\n").map_err(io(&outputs.json))?;
    }
    fs::write(&outputs.markdown, markdown(report)).map_err(io(&outputs.markdown))?;
    fs::write(&outputs.svg, svg(report)).map_err(io(&outputs.svg))?;
    Ok(outputs)
}

fn find(
    report: &CompareReport,
    contestant: Contestant,
    workers: u32,
    kind: LoadKind,
    flows: u32,
    frame_len: usize,
) -> Option<&PointResult> {
    report.points.iter().find(|point| {
        point.contestant == contestant
            && point.workers == workers
            && point.kind == kind
            && point.flows == flows
            && point.frame_len == frame_len
    })
}

fn rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

fn micros(ns: u64) -> String {
    format!("{:.0}", ns as f64 / 1e3)
}

/// One cell group: rate, CPU per unit, p99 — or why there is no number.
fn cells(point: Option<&PointResult>) -> [String; 3] {
    match point {
        None => ["—".to_owned(), "—".to_owned(), "—".to_owned()],
        Some(point) if point.status == PointStatus::NotRun => {
            ["not run".to_owned(), "—".to_owned(), "—".to_owned()]
        }
        Some(point) if point.status == PointStatus::Failed => {
            ["failed".to_owned(), "—".to_owned(), "—".to_owned()]
        }
        Some(point) => {
            let p99 = match point.kind {
                LoadKind::Udp => point
                    .receiver
                    .as_ref()
                    .map(|receiver| receiver.latency.p99_ns),
                LoadKind::Cps => point
                    .connectors
                    .iter()
                    .map(|connector| connector.connect_latency.p99_ns)
                    .max(),
            };
            [
                rate(point.delivered_per_s),
                point
                    .cpu_ns_per_unit_attributed
                    .or(point.cpu_ns_per_unit)
                    .map_or("—".to_owned(), |ns| format!("{ns:.0}")),
                p99.map_or("—".to_owned(), micros),
            ]
        }
    }
}

fn ratio(
    numerator: Option<&PointResult>,
    denominator: Option<&PointResult>,
    pick: fn(&PointResult) -> Option<f64>,
) -> String {
    let ok = |point: Option<&PointResult>| {
        point
            .filter(|point| point.status == PointStatus::Ok)
            .and_then(pick)
    };
    match (ok(numerator), ok(denominator)) {
        (Some(top), Some(bottom)) if bottom > 0.0 => format!("{:.2}×", top / bottom),
        _ => "—".to_owned(),
    }
}

fn load_label(kind: LoadKind, flows: u32, frame_len: usize) -> String {
    match kind {
        LoadKind::Udp => format!(
            "UDP {} flows, {frame_len} B",
            rate(f64::from(flows))
                .replace(".0 k", "k")
                .replace(".00 M", "M")
        ),
        LoadKind::Cps => "TCP connect+close".to_owned(),
    }
}

/// The results table: per load, each contestant's rate, CPU per unit and p99, then ratios.
pub fn markdown(report: &CompareReport) -> String {
    let mut out = String::new();
    let machine = &report.machine;
    let _ = writeln!(
        out,
        "# egw-bench compare — {} on {}\n",
        report.date, machine.host
    );
    let _ =
        writeln!(
        out,
        "Machine: {} × {} ({:.0} GiB), Linux {}. Profile: {:?}{}, {} s per point{}. egw-gateway: {}.\n",
        machine.cpus,
        if machine.cpu_model.is_empty() { "CPU" } else { &machine.cpu_model },
        machine.memory_gib,
        machine.kernel,
        report.settings.profile,
        if report.settings.overridden { " (overridden)" } else { "" },
        report.settings.seconds,
        if report.settings.warmup { ", after a warm-up pass" } else { "" },
        report.gateway_bin.as_deref().unwrap_or("not found (egw and ceiling not run)")
    );
    let _ = writeln!(
        out,
        "Rate = packets (UDP) or connections (TCP) per second that arrived with the right source. \
         CPU = CPU ns per delivered unit: machine-wide system+irq+softirq time (from \
         /proc/stat over the generator's run: kernel forwarding, AF_XDP copies) plus the user time \
         of generator, receiver and egw-gateway — other tenants' user-space work excluded; the \
         JSON also has the raw whole-machine and a baseline-subtracted value. p99 = one-way latency (UDP) or connect time (TCP), µs.\n"
    );
    let _ = writeln!(
        out,
        "| workers | load | kernel rate | kernel CPU ns | kernel p99 µs | egw rate | egw CPU ns | egw p99 µs | ceiling rate | ceiling CPU ns | ceiling p99 µs | egw/kernel rate | egw/kernel CPU | egw/ceiling rate |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let loads: BTreeSet<(u32, u8, u32, usize)> = report
        .points
        .iter()
        .map(|point| {
            (
                point.workers,
                matches!(point.kind, LoadKind::Cps) as u8,
                point.flows,
                point.frame_len,
            )
        })
        .collect();
    for (workers, cps, flows, frame_len) in loads {
        let kind = if cps == 1 {
            LoadKind::Cps
        } else {
            LoadKind::Udp
        };
        let kernel = find(report, Contestant::Kernel, workers, kind, flows, frame_len);
        let egw = find(report, Contestant::Egw, workers, kind, flows, frame_len);
        let ceiling = find(report, Contestant::Ceiling, workers, kind, flows, frame_len);
        let [k_rate, k_cpu, k_p99] = cells(kernel);
        let [e_rate, e_cpu, e_p99] = cells(egw);
        let [c_rate, c_cpu, c_p99] = cells(ceiling);
        let _ = writeln!(
            out,
            "| {workers} | {} | {k_rate} | {k_cpu} | {k_p99} | {e_rate} | {e_cpu} | {e_p99} | {c_rate} | {c_cpu} | {c_p99} | {} | {} | {} |",
            load_label(kind, flows, frame_len),
            ratio(egw, kernel, |point| Some(point.delivered_per_s)),
            ratio(egw, kernel, |point| point.cpu_ns_per_unit_attributed.or(point.cpu_ns_per_unit)),
            ratio(egw, ceiling, |point| Some(point.delivered_per_s)),
        );
    }
    let failures: Vec<&PointResult> = report
        .points
        .iter()
        .filter(|point| point.status != PointStatus::Ok)
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nNot measured:\n");
        let mut seen = BTreeSet::new();
        for point in failures {
            let line = format!(
                "- {} ({:?}): {}",
                point.contestant.label(),
                point.status,
                one_line(&point.note)
            );
            if seen.insert(line.clone()) {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n");
        for note in &report.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    let _ = writeln!(out, "\nWall time: {:.0} s.", report.wall_seconds);
    out
}

/// A note on one line for the table: the first line, and the last one when they differ (a
/// log tail ends with the error that matters), each capped.
pub fn one_line(note: &str) -> String {
    let cap = |line: &str| -> String {
        let line = line.trim();
        if line.chars().count() > 240 {
            format!("{}…", line.chars().take(240).collect::<String>())
        } else {
            line.to_owned()
        }
    };
    let mut lines = note.lines().filter(|line| !line.trim().is_empty());
    match (lines.next(), lines.next_back()) {
        (Some(first), Some(last)) => format!("{} … {}", cap(first), cap(last)),
        (Some(first), None) => cap(first),
        _ => String::new(),
    }
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const PANEL_WIDTH: f64 = 400.0;
const PANEL_HEIGHT: f64 = 300.0;
const TOP: f64 = 50.0;

fn color(contestant: Contestant) -> &'static str {
    match contestant {
        Contestant::Egw => "#1f77b4",
        Contestant::Kernel => "#d62728",
        Contestant::Ceiling => "#2ca02c",
    }
}

fn dash(index: usize) -> &'static str {
    ["", "6,3", "2,3", "8,3,2,3"][index % 4]
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Series {
    label: String,
    contestant: Contestant,
    size_index: usize,
    points: Vec<(f64, f64)>,
}

/// Two panels against the flow count (log scale): delivered pps, and p99 one-way latency.
pub fn svg(report: &CompareReport) -> String {
    let workers = report
        .points
        .iter()
        .map(|point| point.workers)
        .min()
        .unwrap_or(1);
    let sizes: Vec<usize> = report
        .points
        .iter()
        .filter(|point| point.kind == LoadKind::Udp)
        .map(|point| point.frame_len)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let flows: Vec<u32> = report
        .points
        .iter()
        .filter(|point| point.kind == LoadKind::Udp)
        .map(|point| point.flows)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let series_for = |value: fn(&PointResult) -> Option<f64>| -> Vec<Series> {
        let mut all = Vec::new();
        for contestant in Contestant::ALL {
            for (size_index, &size) in sizes.iter().enumerate() {
                let points: Vec<(f64, f64)> = flows
                    .iter()
                    .filter_map(|&count| {
                        let point = find(report, contestant, workers, LoadKind::Udp, count, size)?;
                        (point.status == PointStatus::Ok)
                            .then(|| value(point))
                            .flatten()
                            .map(|y| (f64::from(count), y))
                    })
                    .collect();
                if !points.is_empty() {
                    all.push(Series {
                        label: format!("{} {size} B", contestant.label()),
                        contestant,
                        size_index,
                        points,
                    });
                }
            }
        }
        all
    };
    let throughput = series_for(|point| Some(point.delivered_per_s / 1e6));
    let latency = series_for(|point| {
        point
            .receiver
            .as_ref()
            .map(|receiver| receiver.latency.p99_ns as f64 / 1e3)
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(&format!(
            "egw-bench {} on {} ({} CPUs), {} worker(s)",
            report.date, report.machine.host, report.machine.cpus, workers
        ))
    );
    panel(
        &mut out,
        60.0,
        "delivered Mpps vs flows",
        &throughput,
        &flows,
    );
    panel(
        &mut out,
        540.0,
        "p99 one-way latency (µs) vs flows",
        &latency,
        &flows,
    );
    if throughput.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no UDP point measured</text>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, left: f64, title: &str, series: &[Series], flows: &[u32]) {
    let bottom = TOP + PANEL_HEIGHT;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + PANEL_WIDTH / 2.0,
        TOP - 8.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{TOP}" width="{PANEL_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
    );
    let (min_flows, max_flows) = (
        f64::from(flows.first().copied().unwrap_or(1).max(1)),
        f64::from(flows.last().copied().unwrap_or(10).max(2)),
    );
    let (log_min, log_max) = (
        min_flows.log10(),
        max_flows.log10().max(min_flows.log10() + 1.0),
    );
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(_, y)| y))
        .fold(0.0f64, f64::max)
        .max(f64::EPSILON)
        * 1.1;
    let x_of = |count: f64| {
        left + 20.0 + (count.log10() - log_min) / (log_max - log_min) * (PANEL_WIDTH - 40.0)
    };
    let y_of = |value: f64| bottom - value / max_y * PANEL_HEIGHT;
    for &count in flows {
        let x = x_of(f64::from(count));
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}" stroke="#444"/>"##,
            bottom + 4.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 18.0,
            rate(f64::from(count))
        );
    }
    for step in 0..=4 {
        let value = max_y * f64::from(step) / 4.0;
        let y = y_of(value);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/>"##,
            left + PANEL_WIDTH
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 4.0,
            y + 4.0,
            format_axis(value)
        );
    }
    for (index, line) in series.iter().enumerate() {
        let path: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{}"/>"#,
            path.join(" "),
            color(line.contestant),
            dash(line.size_index)
        );
        for &(x, y) in &line.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                x_of(x),
                y_of(y),
                color(line.contestant)
            );
        }
        let legend_y = bottom + 36.0 + 14.0 * (index / 3) as f64;
        let legend_x = left + 135.0 * (index % 3) as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{legend_x}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="{}" stroke-width="2" stroke-dasharray="{}"/><text x="{}" y="{legend_y:.1}">{}</text>"#,
            legend_y - 4.0,
            legend_x + 20.0,
            legend_y - 4.0,
            color(line.contestant),
            dash(line.size_index),
            legend_x + 24.0,
            escape(&line.label)
        );
    }
}

fn format_axis(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receive::ReceiveReport;
    use crate::results::{CompareSettings, MachineInfo, Profile};
    use std::path::PathBuf;

    fn point(
        contestant: Contestant,
        flows: u32,
        status: PointStatus,
        rate: f64,
        cpu: f64,
    ) -> PointResult {
        PointResult {
            contestant,
            workers: 1,
            kind: LoadKind::Udp,
            flows,
            frame_len: 64,
            status,
            note: if status == PointStatus::NotRun {
                "egw-gateway binary not found".to_owned()
            } else {
                String::new()
            },
            generators: Vec::new(),
            connectors: Vec::new(),
            receiver: Some(ReceiveReport::default()),
            cpu: None,
            baseline_utilisation: 0.0,
            delivered_per_s: rate,
            // The table shows the attributed value; the raw one must not leak into it.
            cpu_ns_per_unit: Some(cpu * 10.0),
            cpu_ns_per_unit_net: Some(cpu),
            cpu_ns_per_unit_attributed: Some(cpu),
            gateway_process: None,
            sent: 0,
            delivered: 0,
            loss_fraction: 0.0,
        }
    }

    fn report(points: Vec<PointResult>) -> CompareReport {
        CompareReport {
            date: "2026-11-21".to_owned(),
            machine: MachineInfo {
                host: "box<1>".to_owned(),
                cpus: 2,
                ..MachineInfo::default()
            },
            settings: CompareSettings::for_profile(
                Profile::Quick,
                PathBuf::from("/x"),
                PathBuf::from("/y"),
            ),
            gateway_bin: None,
            notes: vec!["kernel: tuned".to_owned()],
            points,
            wall_seconds: 1.0,
        }
    }

    #[test]
    fn ratios_are_egw_over_kernel_and_ceiling() {
        let table = markdown(&report(vec![
            point(
                Contestant::Kernel,
                1000,
                PointStatus::Ok,
                1_000_000.0,
                2000.0,
            ),
            point(Contestant::Egw, 1000, PointStatus::Ok, 1_500_000.0, 1000.0),
            point(
                Contestant::Ceiling,
                1000,
                PointStatus::Ok,
                3_000_000.0,
                500.0,
            ),
        ]));
        let row = table
            .lines()
            .find(|line| line.starts_with("| 1 | UDP"))
            .unwrap();
        assert!(row.contains("| 1.50× | 0.50× | 0.50× |"), "{row}");
        assert!(row.contains("| 2000 |") && !row.contains("20000"), "{row}");
        assert!(row.contains("1.00 M"), "{row}");
    }

    #[test]
    fn missing_egw_renders_as_not_run() {
        let table = markdown(&report(vec![
            point(
                Contestant::Kernel,
                1000,
                PointStatus::Ok,
                1_000_000.0,
                2000.0,
            ),
            point(Contestant::Egw, 1000, PointStatus::NotRun, 0.0, 0.0),
        ]));
        let row = table
            .lines()
            .find(|line| line.starts_with("| 1 | UDP"))
            .unwrap();
        assert!(row.contains("not run"), "{row}");
        assert!(row.ends_with("| — | — | — |"), "{row}");
        assert!(table.contains("egw-gateway binary not found"));
    }

    #[test]
    fn notes_fold_to_one_line() {
        assert_eq!(one_line("nothing arrived"), "nothing arrived");
        assert_eq!(
            one_line("egw: exited: log\nINFO a\n\nerror: queue 1\n"),
            "egw: exited: log … error: queue 1"
        );
        assert_eq!(one_line(""), "");
        assert!(one_line(&"x".repeat(1000)).chars().count() <= 241);
    }

    #[test]
    fn svg_is_well_formed_and_escaped() {
        let image = svg(&report(vec![
            point(
                Contestant::Kernel,
                1000,
                PointStatus::Ok,
                1_000_000.0,
                2000.0,
            ),
            point(
                Contestant::Kernel,
                1_000_000,
                PointStatus::Ok,
                500_000.0,
                2000.0,
            ),
        ]));
        assert!(image.starts_with("<svg") && image.trim_end().ends_with("</svg>"));
        assert!(image.contains("box&lt;1&gt;"));
        assert_eq!(image.matches("<polyline").count(), 2);
        let empty = svg(&report(Vec::new()));
        assert!(empty.contains("no UDP point measured"));
    }

    #[test]
    fn files_are_named_by_date_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = write_all(&report(Vec::new()), dir.path()).unwrap();
        assert!(outputs.json.ends_with("2026-11-21-box_1_.json"));
        let parsed: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&outputs.json).unwrap()).unwrap();
        assert_eq!(parsed["machine"]["cpus"], 2);
        assert!(outputs.markdown.exists() && outputs.svg.exists());
    }
}
