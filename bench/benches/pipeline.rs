//! `cargo bench -p egw-bench --bench pipeline [-- --quick]`: measures the engine pipeline and
//! writes `bench/results/pipeline.{json,md}`. Wiring only; the work is in `egw_bench::pipeline`.

use std::path::PathBuf;

use clap::Parser;
use egw_bench::pipeline::{self, Report};

#[derive(Parser)]
#[command(about = "egw engine pipeline benchmark (one core, no I/O)")]
struct Args {
    /// Concurrent sessions to measure established-flow translation at.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000,1000000")]
    sessions: Vec<u32>,
    /// Packets per measured round.
    #[arg(long, default_value_t = 4_000_000)]
    packets: usize,
    /// Rounds per scenario (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// New connections per setup-rate round.
    #[arg(long, default_value_t = 1_000_000)]
    connections: u32,
    /// A few seconds' run with small sizes (CI smoke).
    #[arg(long)]
    quick: bool,
    /// Where to write pipeline.json and pipeline.md.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    if args.quick {
        args.sessions = vec![1000, 10_000];
        args.packets = 200_000;
        args.rounds = 3;
        args.connections = 100_000;
    }
    let mut established = vec![];
    for &n in &args.sessions {
        eprintln!("established flows: {n} sessions…");
        established.extend(pipeline::established(n, args.packets, args.rounds)?);
    }
    eprintln!("new connections: {}…", args.connections);
    let setup = pipeline::setup(args.connections, args.rounds)?;
    let memory = args.sessions.iter().map(|&n| pipeline::memory(n)).collect::<Result<Vec<_>, _>>()?;
    let (host, cpu) = pipeline::host_info();
    let unix_time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let report = Report { established, setup, memory, batch: pipeline::BATCH, frame_len: pipeline::FRAME_LEN, host, cpu, unix_time };
    let md = pipeline::markdown(&report);
    println!("{md}");
    if !args.quick {
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(args.out.join("pipeline.json"), serde_json::to_string_pretty(&report)?)?;
        std::fs::write(args.out.join("pipeline.md"), &md)?;
        eprintln!("wrote {}/pipeline.{{json,md}}", args.out.display());
    }
    Ok(())
}
