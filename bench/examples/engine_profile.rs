//! Instruction-count driver for the engine's established-flow path:
//!
//! ```text
//! cargo build --profile bench -p egw-bench --example engine_profile
//! valgrind --tool=callgrind --toggle-collect='*translate_batch*' \
//!     target/release/examples/engine_profile 10000 out 64000
//! ```
//!
//! Divide the collected instructions by the packets printed to get instructions per packet.

use egw_bench::pipeline;
use egw_engine::Ingress;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let sessions: u32 = args.next().as_deref().unwrap_or("10000").parse()?;
    let ingress = match args.next().as_deref().unwrap_or("out") {
        "out" => Ingress::Inside,
        "in" => Ingress::Outside,
        other => return Err(format!("direction must be out or in, got {other}").into()),
    };
    let packets: usize = args.next().as_deref().unwrap_or("64000").parse()?;
    let prefetch = args.next().as_deref() != Some("no-prefetch");
    let forwarded = pipeline::profile_established(sessions, packets, ingress, prefetch)?;
    println!("packets {forwarded}");
    Ok(())
}
