//! The engine pipeline benchmark: one core, the NAT engine alone (no I/O), 64-byte frames in
//! batches of 64, sessions spread over pods, remotes and a pool of external addresses.
//!
//! Each measured batch is filled the way a NIC fills UMEM frames: one 60-byte template per
//! direction is copied and patched with the session's addresses and ports (checksums updated),
//! so filling costs no cache miss a real NIC's DMA would not. The fill alone is timed too and
//! subtracted, so `engine_ns` is the engine's own cost per packet; `total_ns` includes the fill.
//! Each batch is first passed to `Engine::prefetch` (what the gateway's workers do); the run is
//! repeated without it to show what overlapping the batch's cache misses buys.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egw_engine::ChecksumDelta;
use egw_engine::{CompiledRouteTable, Engine, EngineConfig, Ingress, Verdict};
use egw_policy::{ActionSpec, PolicySpec, PoolSpec, RouteTableSpec, RuleSpec, SourceSpec};
use egw_testkit::{MacAddr, PacketBuilder};
use serde::Serialize;

pub const FRAME_LEN: usize = 60; // 64 bytes on the wire with the FCS
pub const BATCH: usize = 64;
const SLOT: usize = 128; // bytes per batch slot, room for the frame
const REMOTES: u32 = 16;
const PORTS_PER_POD: u32 = 16;
const EXTERNALS: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("engine configuration rejected: {0}")]
    Config(#[from] egw_engine::ConfigError),
    #[error("route table rejected: {0}")]
    Table(#[from] egw_policy::RouteTableError),
    #[error("building frames failed: {0}")]
    Build(String),
    #[error("warm-up did not create every session: {created} of {wanted} ({detail})")]
    WarmUp {
        created: u64,
        wanted: u64,
        detail: String,
    },
}

/// One measured scenario.
#[derive(Clone, Debug, Serialize)]
pub struct EstablishedResult {
    pub sessions: u64,
    pub direction: &'static str,
    pub packets: u64,
    /// Engine time per packet (fill subtracted), median of the rounds.
    pub engine_ns: f64,
    /// Including filling the frame (the RX emulation).
    pub total_ns: f64,
    pub mpps: f64,
    /// Engine time per packet without `Engine::prefetch`.
    pub engine_ns_without_prefetch: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SetupResult {
    pub connections: u64,
    pub per_second: f64,
    pub ns_per_connection: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    pub sessions: u64,
    /// Flow table bytes (slab + indices + wheel) divided by tracked sessions, at capacity.
    pub table_bytes_per_session: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub established: Vec<EstablishedResult>,
    pub setup: SetupResult,
    pub memory: Vec<MemoryResult>,
    pub batch: usize,
    pub frame_len: usize,
    pub host: String,
    pub cpu: String,
    pub unix_time: u64,
}

fn table() -> Result<Arc<CompiledRouteTable>, BenchError> {
    let addresses = (1..=EXTERNALS)
        .map(|i| Ipv4Addr::new(198, 51, 100, i))
        .collect();
    let spec = RouteTableSpec {
        public_addresses: Default::default(),
        generation: 1,
        pools: vec![PoolSpec {
            name: "egress".into(),
            addresses,
            pairing: true,
        }],
        policies: vec![PolicySpec {
            name: "all".into(),
            rules: vec![RuleSpec {
                destination: "0.0.0.0/0"
                    .parse()
                    .map_err(|e| BenchError::Build(format!("{e}")))?,
                action: ActionSpec::Snat {
                    pool: "egress".into(),
                },
                description: String::new(),
            }],
            default_action: None,
        }],
        sources: vec![SourceSpec {
            cidr: "10.0.0.0/8"
                .parse()
                .map_err(|e| BenchError::Build(format!("{e}")))?,
            policy: "all".into(),
        }],
        default_action: ActionSpec::Deny {
            reason: "no policy".into(),
        },
    };
    Ok(Arc::new(CompiledRouteTable::compile(spec)?))
}

fn engine(capacity: u32) -> Result<Engine, BenchError> {
    let config = EngineConfig {
        flow_capacity: capacity,
        inside_address: Ipv4Addr::new(10, 0, 0, 1),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(config)?;
    // As the gateway does: back the big tables with huge pages (fewer TLB misses). Advice only.
    if let Err(err) = egw_xdp::memory::advise_huge_pages(&e.memory_regions()) {
        eprintln!("huge-page advice refused ({err}); measuring with 4 KiB pages");
    }
    e.set_route_table(table()?);
    Ok(e)
}

/// Session `i`: pod endpoint (pod, port) × remote.
fn session(i: u32) -> (Ipv4Addr, u16, Ipv4Addr) {
    let remote = i % REMOTES;
    let endpoint = i / REMOTES;
    let pod = endpoint / PORTS_PER_POD;
    let port = 20000 + (endpoint % PORTS_PER_POD) as u16;
    let pod_ip = Ipv4Addr::from(0x0a01_0000u32 + pod);
    let remote_ip = Ipv4Addr::new(203, 0, 113, 1 + remote as u8);
    (pod_ip, port, remote_ip)
}

fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Result<Vec<u8>, BenchError> {
    let b = PacketBuilder::new()
        .eth(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
        .ipv4(src, dst)
        .udp(sport, dport)
        .payload(&[0u8; FRAME_LEN - 14 - 20 - 8]);
    b.try_build().map_err(|e| BenchError::Build(format!("{e}")))
}

/// A frame template patched per session: the fill cost a NIC's DMA stands for, without reading
/// a per-session frame from memory.
struct Template {
    frame: [u8; FRAME_LEN],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
}

impl Template {
    fn new(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Result<Self, BenchError> {
        let built = udp_frame(src, sport, dst, dport)?;
        let mut frame = [0u8; FRAME_LEN];
        frame.copy_from_slice(&built[..FRAME_LEN]);
        Ok(Self {
            frame,
            src,
            dst,
            sport,
            dport,
        })
    }

    /// Writes the template with these endpoints into `out`, fixing both checksums incrementally.
    #[inline]
    fn write(&self, out: &mut [u8], src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) {
        out[..FRAME_LEN].copy_from_slice(&self.frame);
        let addresses = ChecksumDelta::new()
            .address(self.src, src)
            .address(self.dst, dst);
        let ports = addresses.word(self.sport, sport).word(self.dport, dport);
        out[26..30].copy_from_slice(&src.octets());
        out[30..34].copy_from_slice(&dst.octets());
        out[34..36].copy_from_slice(&sport.to_be_bytes());
        out[36..38].copy_from_slice(&dport.to_be_bytes());
        let ip_sum = u16::from_be_bytes([out[24], out[25]]);
        out[24..26].copy_from_slice(&addresses.apply(ip_sum).to_be_bytes());
        let udp_sum = u16::from_be_bytes([out[40], out[41]]);
        out[40..42].copy_from_slice(&ports.apply_udp(udp_sum).to_be_bytes());
    }
}

/// `sessions` established flows: the engine, and the external endpoint of each session.
struct Established {
    engine: Engine,
    /// (external address index, external port) per session, for the return frames.
    external: Vec<(u8, u16)>,
    outbound: Template,
    inbound: Template,
    sessions: usize,
}

fn external_address(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, index)
}

fn establish(sessions: u32, now: Duration) -> Result<Established, BenchError> {
    let mut engine = engine(sessions + sessions / 8 + 16)?;
    let (pod0, port0, remote0) = session(0);
    let outbound = Template::new(pod0, port0, remote0, 443)?;
    let inbound = Template::new(remote0, 443, external_address(1), 1024)?;
    let mut external = Vec::with_capacity(sessions as usize);
    let mut buf = [0u8; SLOT];
    for i in 0..sessions {
        let (pod, port, remote) = session(i);
        outbound.write(&mut buf, pod, port, remote, 443);
        match engine.process(&mut buf, FRAME_LEN, Ingress::Inside, now) {
            Verdict::Forward { .. } => {}
            other => {
                return Err(BenchError::WarmUp {
                    created: engine.counters().flows_created,
                    wanted: u64::from(sessions),
                    detail: format!("{other:?}"),
                })
            }
        }
        // The reply goes from the remote to the external endpoint the engine chose.
        external.push((buf[29], u16::from_be_bytes([buf[34], buf[35]])));
    }
    Ok(Established {
        engine,
        external,
        outbound,
        inbound,
        sessions: sessions as usize,
    })
}

/// A fixed pseudo-random visiting order so every round touches sessions all over the table.
fn visit_order(sessions: usize, count: usize) -> Vec<u32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % sessions as u64) as u32
        })
        .collect()
}

/// Fills a batch with the frames of the given sessions in one direction.
fn fill(batch: &mut [u8], est: &Established, direction: Ingress, order: &[u32]) {
    for (slot, &i) in batch.chunks_exact_mut(SLOT).zip(order) {
        let (pod, port, remote) = session(i);
        if direction == Ingress::Inside {
            est.outbound.write(slot, pod, port, remote, 443);
        } else {
            let (ext, ext_port) = est.external[i as usize];
            est.inbound
                .write(slot, remote, 443, external_address(ext), ext_port);
        }
    }
}

/// One timed pass over `order`; returns (forwarded packets, elapsed).
fn run_pass(
    est: &mut Established,
    batch: &mut [u8],
    ingress: Ingress,
    order: &[u32],
    prefetch: bool,
    now: Duration,
) -> (u64, Duration) {
    let mut forwarded = 0u64;
    let start = Instant::now();
    for chunk in order.chunks_exact(BATCH) {
        fill(batch, est, ingress, chunk);
        if prefetch {
            let frames: [&[u8]; BATCH] =
                std::array::from_fn(|k| &batch[k * SLOT..k * SLOT + FRAME_LEN]);
            est.engine.prefetch(&frames, ingress);
        }
        for slot in batch.chunks_exact_mut(SLOT) {
            if let Verdict::Forward { .. } = est.engine.process(slot, FRAME_LEN, ingress, now) {
                forwarded += 1;
            }
        }
    }
    (forwarded, start.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Established-flow translation cost at `sessions` concurrent sessions.
pub fn established(
    sessions: u32,
    packets: usize,
    rounds: usize,
) -> Result<Vec<EstablishedResult>, BenchError> {
    let now = Duration::from_secs(10);
    let mut est = establish(sessions, now)?;
    let order = visit_order(est.sessions, packets.max(BATCH));
    let mut batch = vec![0u8; SLOT * BATCH];
    let mut results = vec![];
    for (direction, ingress) in [("outbound", Ingress::Inside), ("inbound", Ingress::Outside)] {
        let mut engine_ns = vec![];
        let mut plain_ns = vec![];
        let mut total_ns = vec![];
        let n = (order.len() / BATCH * BATCH) as f64;
        for _ in 0..rounds {
            let start = Instant::now();
            for chunk in order.chunks_exact(BATCH) {
                fill(&mut batch, &est, ingress, chunk);
                std::hint::black_box(&mut batch);
            }
            let fill_only = start.elapsed();
            for prefetch in [true, false] {
                let (forwarded, total) =
                    run_pass(&mut est, &mut batch, ingress, &order, prefetch, now);
                if forwarded as f64 != n {
                    return Err(BenchError::WarmUp {
                        created: forwarded,
                        wanted: n as u64,
                        detail: format!("{direction}: {:?}", est.engine.counters().drops),
                    });
                }
                let engine = total.saturating_sub(fill_only).as_nanos() as f64 / n;
                if prefetch {
                    total_ns.push(total.as_nanos() as f64 / n);
                    engine_ns.push(engine);
                } else {
                    plain_ns.push(engine);
                }
            }
        }
        let engine_ns = median(engine_ns);
        results.push(EstablishedResult {
            sessions: u64::from(sessions),
            direction,
            packets: (order.len() / BATCH * BATCH * rounds) as u64,
            engine_ns,
            total_ns: median(total_ns),
            mpps: 1e3 / engine_ns,
            engine_ns_without_prefetch: median(plain_ns),
        });
    }
    Ok(results)
}

/// Translates one filled batch (prefetch, then every frame). Never inlined, so an instruction
/// profiler can count exactly this (`valgrind --tool=callgrind --toggle-collect=*translate_batch*`).
#[inline(never)]
pub fn translate_batch(
    engine: &mut Engine,
    batch: &mut [u8],
    ingress: Ingress,
    prefetch: bool,
    now: Duration,
) -> u64 {
    if prefetch {
        let frames: [&[u8]; BATCH] =
            std::array::from_fn(|k| &batch[k * SLOT..k * SLOT + FRAME_LEN]);
        engine.prefetch(&frames, ingress);
    }
    let mut forwarded = 0;
    for slot in batch.chunks_exact_mut(SLOT) {
        if let Verdict::Forward { .. } = engine.process(slot, FRAME_LEN, ingress, now) {
            forwarded += 1;
        }
    }
    forwarded
}

/// The driver behind `examples/engine_profile.rs`: establishes `sessions` flows, then translates
/// `packets` established-flow packets in one direction through [`translate_batch`]. Returns the
/// packets forwarded (all of them, or an error).
pub fn profile_established(
    sessions: u32,
    packets: usize,
    ingress: Ingress,
    prefetch: bool,
) -> Result<u64, BenchError> {
    let now = Duration::from_secs(10);
    let mut est = establish(sessions, now)?;
    let order = visit_order(est.sessions, packets.max(BATCH));
    let mut batch = vec![0u8; SLOT * BATCH];
    let mut forwarded = 0;
    for chunk in order.chunks_exact(BATCH) {
        fill(&mut batch, &est, ingress, chunk);
        forwarded += translate_batch(&mut est.engine, &mut batch, ingress, prefetch, now);
    }
    let wanted = (order.len() / BATCH * BATCH) as u64;
    if forwarded != wanted {
        return Err(BenchError::WarmUp {
            created: forwarded,
            wanted,
            detail: format!("{:?}", est.engine.counters().drops),
        });
    }
    Ok(forwarded)
}

/// New-connection setup: first packets of distinct sessions into an empty engine.
pub fn setup(connections: u32, rounds: usize) -> Result<SetupResult, BenchError> {
    let now = Duration::from_secs(10);
    let (pod0, port0, remote0) = session(0);
    let template = Template::new(pod0, port0, remote0, 443)?;
    let mut samples = vec![];
    let mut batch = vec![0u8; SLOT * BATCH];
    let order: Vec<u32> = (0..connections).collect();
    for _ in 0..rounds {
        let mut engine = engine(connections + 16)?;
        let start = Instant::now();
        for chunk in order.chunks_exact(BATCH) {
            for (slot, &i) in batch.chunks_exact_mut(SLOT).zip(chunk) {
                let (pod, port, remote) = session(i);
                template.write(slot, pod, port, remote, 443);
            }
            for slot in batch.chunks_exact_mut(SLOT) {
                std::hint::black_box(engine.process(slot, FRAME_LEN, Ingress::Inside, now));
            }
        }
        let elapsed = start.elapsed();
        let created = engine.counters().flows_created;
        let wanted = (connections as usize / BATCH * BATCH) as u64;
        if created != wanted {
            return Err(BenchError::WarmUp {
                created,
                wanted,
                detail: format!("{:?}", engine.counters().drops),
            });
        }
        samples.push(elapsed.as_nanos() as f64 / created as f64);
    }
    let ns = median(samples);
    Ok(SetupResult {
        connections: u64::from(connections),
        per_second: 1e9 / ns,
        ns_per_connection: ns,
    })
}

/// Memory per session with the table sized for exactly `sessions`.
pub fn memory(sessions: u32) -> Result<MemoryResult, BenchError> {
    let now = Duration::from_secs(10);
    let mut engine = engine(sessions)?;
    let (pod0, port0, remote0) = session(0);
    let template = Template::new(pod0, port0, remote0, 443)?;
    let mut buf = [0u8; SLOT];
    for i in 0..sessions {
        let (pod, port, remote) = session(i);
        template.write(&mut buf, pod, port, remote, 443);
        std::hint::black_box(engine.process(&mut buf, FRAME_LEN, Ingress::Inside, now));
    }
    let tracked = u64::from(engine.occupancy().0);
    Ok(MemoryResult {
        sessions: tracked,
        table_bytes_per_session: engine.flow_table_bytes() as f64 / tracked.max(1) as f64,
    })
}

/// Renders the report as a Markdown table with the targets next to the measurements.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Engine pipeline benchmark — one core, {}-byte frames ({} on the wire), batches of {}. Host `{}` ({}).\n\n",
        r.frame_len,
        r.frame_len + 4,
        r.batch,
        r.host,
        r.cpu
    ));
    s.push_str("| sessions | direction | engine ns/pkt | without prefetch ns/pkt | with frame fill ns/pkt | Mpps (engine) | target |\n");
    s.push_str("|---:|---|---:|---:|---:|---:|---|\n");
    for e in &r.established {
        let target = match e.sessions {
            n if n >= 1_000_000 => "≤ 40 ns",
            n if n <= 10_000 => "≤ 25 ns (10 k)",
            _ => "",
        };
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {} |\n",
            e.sessions,
            e.direction,
            e.engine_ns,
            e.engine_ns_without_prefetch,
            e.total_ns,
            e.mpps,
            target
        ));
    }
    s.push_str(&format!(
        "\nNew connections: **{:.2} M/s** ({:.0} ns each, {} connections; target ≥ 2 M/s).\n\n",
        r.setup.per_second / 1e6,
        r.setup.ns_per_connection,
        r.setup.connections
    ));
    s.push_str("| sessions | flow-table bytes/session (slab + indices + wheel) | target |\n|---:|---:|---|\n");
    for m in &r.memory {
        s.push_str(&format!(
            "| {} | {:.1} | ≤ 128 B |\n",
            m.sessions, m.table_bytes_per_session
        ));
    }
    s
}

pub fn host_info() -> (String, String) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    (host, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark pipeline works end to end at toy sizes (speed is not asserted).
    #[test]
    fn smoke() {
        let est = established(1000, 2048, 1).expect("established");
        assert_eq!(est.len(), 2);
        assert!(est
            .iter()
            .all(|e| e.packets == 2048 && e.engine_ns.is_finite()));
        let s = setup(4096, 1).expect("setup");
        assert_eq!(s.connections, 4096);
        let m = memory(4096).expect("memory");
        assert_eq!(m.sessions, 4096);
        assert!(m.table_bytes_per_session > 0.0);
        let (host, cpu) = host_info();
        let report = Report {
            established: est,
            setup: s,
            memory: vec![m],
            batch: BATCH,
            frame_len: FRAME_LEN,
            host,
            cpu,
            unix_time: 0,
        };
        let md = markdown(&report);
        assert!(
            md.contains("| 1000 | outbound |") && md.contains("| 1000 | inbound |"),
            "{md}"
        );
    }
}
