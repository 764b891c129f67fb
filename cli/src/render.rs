//! Human-readable tables. JSON and YAML come straight from [`crate::views`].

use std::fmt::Write as _;

use comfy_table::{presets, CellAlignment, ColumnConstraint, Table};
use egw_proto::yaml;

use crate::views::{ApplyView, CountersView, DrainView, FlowListView, StatsView, StatusView};

/// A borderless, kubectl-style table with the given header.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(header.iter().copied());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
    table
}

/// Right-aligns the listed (numeric) columns.
fn align_right(table: &mut Table, columns: &[usize]) {
    for index in columns {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Renders a table without trailing spaces, followed by a newline.
fn finish(table: &Table) -> String {
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// 1536 → "1.5 KiB".
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// 93784 → "1d2h3m".
pub fn duration(seconds: u64) -> String {
    let (days, hours, minutes, secs) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{minutes}m{secs}s"),
        (0, _, _) => format!("{hours}h{minutes}m"),
        _ => format!("{days}d{hours}h{minutes}m"),
    }
}

/// Milliseconds since the Unix epoch → "HH:MM:SS.mmm" (UTC).
pub fn time_of_day(unix_ms: u64) -> String {
    let millis = unix_ms % 1000;
    let seconds = unix_ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

fn percent(used: u64, capacity: u64) -> String {
    if capacity == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", used as f64 * 100.0 / capacity as f64)
    }
}

fn usage(used: u64, capacity: u64) -> String {
    format!("{used}/{capacity} ({})", percent(used, capacity))
}

/// `egwctl status`.
pub fn status(view: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<12}{}", "Version", view.version);
    let _ = writeln!(out, "{:<12}{}", "Uptime", duration(view.uptime_seconds));
    let _ = writeln!(out, "{:<12}{:016x}", "Epoch", view.epoch);
    let _ = writeln!(out, "{:<12}{}", "Generation", view.generation);

    out.push('\n');
    let mut interfaces = table(&["INTERFACE", "IFINDEX", "ROLE", "XDP", "SOCKET", "QUEUES"]);
    for interface in &view.interfaces {
        interfaces.add_row(vec![
            interface.name.clone(),
            interface.ifindex.to_string(),
            interface.role.to_owned(),
            interface.xdp_mode.to_owned(),
            interface.socket_mode.to_owned(),
            interface.queues.to_string(),
        ]);
    }
    align_right(&mut interfaces, &[1, 5]);
    out.push_str(&finish(&interfaces));

    out.push('\n');
    out.push_str(&finish(&counters_table(&view.cores, None)));

    out.push('\n');
    let mut conntrack = table(&["CORE", "CONNTRACK USED", "CAPACITY", "FULL"]);
    for occupancy in &view.conntrack {
        conntrack.add_row(vec![
            occupancy.core.to_string(),
            occupancy.used.to_string(),
            occupancy.capacity.to_string(),
            percent(occupancy.used, occupancy.capacity),
        ]);
    }
    align_right(&mut conntrack, &[0, 1, 2, 3]);
    out.push_str(&finish(&conntrack));

    let mut drops = std::collections::BTreeMap::<&str, u64>::new();
    for core in &view.cores {
        for (reason, count) in &core.drops {
            let total = drops.entry(reason.as_str()).or_default();
            *total = total.saturating_add(*count);
        }
    }
    if !drops.is_empty() {
        out.push('\n');
        let mut drop_table = table(&["DROP REASON", "PACKETS"]);
        for (reason, count) in drops {
            drop_table.add_row(vec![reason.to_owned(), count.to_string()]);
        }
        align_right(&mut drop_table, &[1]);
        out.push_str(&finish(&drop_table));
    }

    out.push('\n');
    let mut external = table(&[
        "EXTERNAL IP",
        "POOL",
        "TCP PORTS",
        "UDP PORTS",
        "ICMP IDS",
        "FLOWS",
        "STATE",
    ]);
    for ip in &view.external_ips {
        external.add_row(vec![
            ip.ip.clone(),
            ip.pool.clone(),
            usage(ip.tcp.used, ip.tcp.capacity),
            usage(ip.udp.used, ip.udp.capacity),
            usage(ip.icmp.used, ip.icmp.capacity),
            ip.flows_remaining.to_string(),
            if ip.draining { "draining" } else { "active" }.to_owned(),
        ]);
    }
    align_right(&mut external, &[5]);
    out.push_str(&finish(&external));
    out
}

/// Per-core counters, with an optional totals row.
fn counters_table(cores: &[CountersView], totals: Option<&CountersView>) -> Table {
    let mut table = table(&[
        "CORE",
        "RX PACKETS",
        "RX BYTES",
        "TX PACKETS",
        "TX BYTES",
        "DROPS",
        "FLOWS NEW",
        "FLOWS DONE",
        "HANDOFFS",
    ]);
    let row = |label: String, counters: &CountersView| {
        vec![
            label,
            counters.rx_packets.to_string(),
            bytes(counters.rx_bytes),
            counters.tx_packets.to_string(),
            bytes(counters.tx_bytes),
            counters.total_drops().to_string(),
            counters.flows_created.to_string(),
            counters.flows_expired.to_string(),
            counters.handoffs.to_string(),
        ]
    };
    for core in cores {
        table.add_row(row(core.core.unwrap_or_default().to_string(), core));
    }
    if let Some(totals) = totals {
        table.add_row(row("total".to_owned(), totals));
    }
    align_right(&mut table, &[1, 2, 3, 4, 5, 6, 7, 8]);
    table
}

/// `egwctl stats` (one snapshot).
pub fn stats(view: &StatsView) -> String {
    let mut out = format!(
        "Snapshot at {} UTC\n\n",
        time_of_day(view.timestamp_unix_ms)
    );
    out.push_str(&finish(&counters_table(&view.cores, Some(&view.totals))));
    out
}

/// Column layout of `egwctl stats --watch` lines.
const WATCH_HEADER: [&str; 7] = [
    "TIME (UTC)",
    "RX PPS",
    "TX PPS",
    "RX BIT/S",
    "TX BIT/S",
    "DROPS/S",
    "NEW FLOWS/S",
];

/// The header line of `egwctl stats --watch`.
pub fn watch_header() -> String {
    watch_line(WATCH_HEADER.map(str::to_owned))
}

fn watch_line(columns: [String; 7]) -> String {
    let mut line = format!("{:<14}", columns[0]);
    for column in &columns[1..] {
        let _ = write!(line, "{column:>14}");
    }
    line.push('\n');
    line
}

/// One line of `egwctl stats --watch`: rates between two snapshots
/// ("-" for the first snapshot).
pub fn watch_row(previous: Option<&StatsView>, current: &StatsView) -> String {
    let time = time_of_day(current.timestamp_unix_ms);
    let Some(previous) =
        previous.filter(|previous| current.timestamp_unix_ms > previous.timestamp_unix_ms)
    else {
        let dash = || "-".to_owned();
        return watch_line([time, dash(), dash(), dash(), dash(), dash(), dash()]);
    };
    let seconds = (current.timestamp_unix_ms - previous.timestamp_unix_ms) as f64 / 1000.0;
    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
    let (now, before) = (&current.totals, &previous.totals);
    watch_line([
        time,
        format!("{:.0}", rate(now.rx_packets, before.rx_packets)),
        format!("{:.0}", rate(now.tx_packets, before.tx_packets)),
        format!("{:.0}", rate(now.rx_bytes, before.rx_bytes) * 8.0),
        format!("{:.0}", rate(now.tx_bytes, before.tx_bytes) * 8.0),
        format!("{:.0}", rate(now.total_drops(), before.total_drops())),
        format!("{:.0}", rate(now.flows_created, before.flows_created)),
    ])
}

/// `egwctl flows`.
pub fn flows(view: &FlowListView) -> String {
    if view.flows.is_empty() {
        return "No flows match.\n".to_owned();
    }
    let mut table = table(&[
        "PROTO",
        "POD",
        "EXTERNAL",
        "REMOTE",
        "STATE",
        "CORE",
        "AGE",
        "IDLE",
        "PKTS OUT/IN",
        "BYTES OUT/IN",
    ]);
    for flow in &view.flows {
        table.add_row(vec![
            flow.protocol.to_owned(),
            format!("{}:{}", flow.pod_ip, flow.pod_port),
            format!("{}:{}", flow.external_ip, flow.external_port),
            format!("{}:{}", flow.remote_ip, flow.remote_port),
            flow.state.to_owned(),
            flow.core.to_string(),
            duration(flow.age_seconds),
            duration(flow.idle_seconds),
            format!("{}/{}", flow.packets_out, flow.packets_in),
            format!("{}/{}", bytes(flow.bytes_out), bytes(flow.bytes_in)),
        ]);
    }
    align_right(&mut table, &[5, 6, 7, 8, 9]);
    let mut out = finish(&table);
    if view.next_page_token.is_some() {
        let _ = writeln!(
            out,
            "\nShowing the first {} flows; more match. Use --all to list every page, or narrow the filters.",
            view.flows.len()
        );
    }
    out
}

fn action(action: &yaml::Action) -> String {
    match action {
        yaml::Action::Snat { pool } => format!("snat {pool}"),
        yaml::Action::Bypass => "bypass".to_owned(),
        yaml::Action::Deny { reason } => format!("deny ({reason})"),
    }
}

/// `egwctl routes get`.
pub fn route_table(table_view: Option<&yaml::RouteTableDocument>, epoch: u64) -> String {
    let Some(route_table) = table_view else {
        return format!("No route table applied yet (gateway epoch {epoch:016x}).\n");
    };
    let mut out = format!(
        "Generation {} (gateway epoch {epoch:016x})\n\n",
        route_table.generation
    );
    let mut pools = table(&["POOL", "ADDRESSES", "PAIRING"]);
    for pool in &route_table.pools {
        let addresses: Vec<String> = pool
            .addresses
            .iter()
            .map(|address| match address.public {
                Some(public) => format!("{} (public {public})", address.snat),
                None => address.snat.to_string(),
            })
            .collect();
        pools.add_row(vec![
            pool.name.clone(),
            addresses.join(", "),
            if pool.pairing { "yes" } else { "no" }.to_owned(),
        ]);
    }
    out.push_str(&finish(&pools));

    out.push('\n');
    let mut rules = table(&["POLICY", "DESTINATION", "ACTION", "DESCRIPTION"]);
    for policy in &route_table.policies {
        for rule in &policy.rules {
            rules.add_row(vec![
                policy.name.clone(),
                rule.destination.to_string(),
                action(&rule.action),
                rule.description.clone().unwrap_or_default(),
            ]);
        }
    }
    out.push_str(&finish(&rules));

    out.push('\n');
    let mut sources = table(&["SOURCE", "POLICY"]);
    for source in &route_table.sources {
        sources.add_row(vec![source.cidr.to_string(), source.policy.clone()]);
    }
    out.push_str(&finish(&sources));
    let _ = writeln!(
        out,
        "\nOther sources: {}",
        action(&route_table.default_action)
    );
    out
}

/// `egwctl routes apply`.
pub fn applied(view: &ApplyView) -> String {
    if view.unchanged {
        format!(
            "Route table generation {} is already applied; nothing changed.\n",
            view.generation
        )
    } else {
        format!("Route table generation {} applied.\n", view.generation)
    }
}

/// `egwctl drain`.
pub fn drained(view: &DrainView) -> String {
    if view.draining {
        format!(
            "{} is draining: it takes no new flows; {} flows remaining.\n",
            view.external_ip, view.flows_remaining
        )
    } else {
        format!(
            "{} is active: it takes new flows again ({} flows in use).\n",
            view.external_ip, view.flows_remaining
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_readable() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m5s");
        assert_eq!(duration(3 * 3600 + 120), "3h2m");
        assert_eq!(duration(93_784), "1d2h3m");
        assert_eq!(time_of_day(1_700_000_000_123), "22:13:20.123");
    }
}
