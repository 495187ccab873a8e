//! `tenantry-bench`: runs B1 and B11 in-process, starts the stack, runs B2–B7, B14 and B15
//! (usage ingestion, check-and-consume), B9d and B10 (the agent and the SDK beside it), B17
//! (audit on ÷ off) and B8, then the soak (B9 on a fresh stack, B9′ on the all-in-one binary),
//! B12 (agent cold start) and B16 (webhook latency, on a stack of its own), and prints the
//! table (Markdown) on stdout.
//! Progress goes to stderr. See BENCHMARKS.md.

use std::io::Write as _;

use anyhow::{Result, bail};
use clap::Parser;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tenantry_bench::{
    audit, batch, distribution, edge,
    fixture::{Fixture, Settings},
    inproc, list, memory, metering,
    procfs::{self, StealMeter},
    replica,
    report::{self, Row, Verdict},
    rpc,
    soak::{self, Backend},
    webhooks,
};

/// Runs Tenantry's benchmark suite against the real service binaries on this machine.
#[derive(Debug, Parser)]
#[command(name = "tenantry-bench")]
struct Args {
    /// Smaller counts (B7 with 100,000 accounts, B8 with 200,000 grants, 2 s runs).
    #[arg(long)]
    quick: bool,
    /// Only these measures, e.g. `B2,B4` (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A/B pairs per measure (at least 5).
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Requests in flight for the throughput measures (B2–B4).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// CPUs for the services (`taskset -c` list); default: CPU 0 when there are two or more.
    #[arg(long)]
    server_cpus: Option<String>,
    /// CPUs for this load generator; default: every CPU but the servers' first.
    #[arg(long)]
    client_cpus: Option<String>,
    /// Do not pin anything.
    #[arg(long)]
    no_pin: bool,
    /// Seconds of load per side of the soak (B9, B9′), after a warm-up of a sixth of it;
    /// default 60 (30 with `--quick`), at most 3,000.
    #[arg(long)]
    soak_secs: Option<u64>,
}

// Counts allocations for B1; the system allocator underneath, as the suite always used.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const ALL: [&str; 18] = [
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B9d", "B10", "B11", "B12", "B13", "B14",
    "B15", "B16", "B17",
];

fn main() -> Result<()> {
    let args = Args::parse();
    if args.pairs < 5 {
        bail!("--pairs must be at least 5");
    }
    let only: Vec<String> = args.only.iter().map(|s| s.trim().to_owned()).collect();
    if let Some(bad) = only
        .iter()
        .find(|m| !ALL.iter().any(|a| a.eq_ignore_ascii_case(m)))
    {
        bail!("unknown measure {bad}; choose among {}", ALL.join(", "));
    }
    let wanted = |m: &str| only.is_empty() || only.iter().any(|o| o.eq_ignore_ascii_case(m));

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut settings = Settings::new(args.quick);
    settings.pairs = args.pairs;
    settings.concurrency = args.concurrency;
    if let Some(secs) = args.soak_secs {
        if !(1..=soak::MAX_SOAK_SECS).contains(&secs) {
            bail!("--soak-secs must be 1 to {}", soak::MAX_SOAK_SECS);
        }
        settings.soak = std::time::Duration::from_secs(secs);
    }
    if !args.no_pin && cpus >= 2 {
        settings.server_cpus = Some(args.server_cpus.unwrap_or_else(|| "0".into()));
        settings.client_cpus = Some(
            args.client_cpus
                .unwrap_or_else(|| format!("1-{}", cpus - 1)),
        );
    }
    // Pin before the runtime starts its threads (they inherit the mask).
    if let Some(client) = &settings.client_cpus {
        procfs::pin(std::process::id(), client).map_err(anyhow::Error::msg)?;
    }
    // B1 first, on this thread alone: the allocation count is the whole process's.
    let b1 = wanted("B1").then(|| {
        eprintln!("B1 …");
        let steal = StealMeter::start();
        let row = inproc::b1(ALLOCATOR, settings.pairs, settings.quick).map(|r| stolen(r, steal));
        if let Ok(row) = &row {
            eprintln!("{}", report::render(std::slice::from_ref(row)));
        }
        row
    });
    // B11 likewise: the SDK's check, allocations counted.
    let b11 = wanted("B11").then(|| {
        eprintln!("B11 …");
        let steal = StealMeter::start();
        let row =
            distribution::b11(ALLOCATOR, settings.pairs, settings.quick).map(|r| stolen(r, steal));
        if let Ok(row) = &row {
            eprintln!("{}", report::render(std::slice::from_ref(row)));
        }
        row
    });
    // B13 likewise: the metered check, allocations counted.
    let b13 = wanted("B13").then(|| {
        eprintln!("B13 …");
        let steal = StealMeter::start();
        let row = inproc::b13(ALLOCATOR, settings.pairs, settings.quick).map(|r| stolen(r, steal));
        if let Ok(row) = &row {
            eprintln!("{}", report::render(std::slice::from_ref(row)));
        }
        row
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(
        settings,
        [("B1", b1), ("B11", b11), ("B13", b13)],
        wanted,
    ))
}

async fn run(
    settings: Settings,
    in_process: [(&'static str, Option<Result<Row>>); 3],
    wanted: impl Fn(&str) -> bool,
) -> Result<()> {
    eprintln!(
        "tenantry-bench: servers on CPUs {}, load generator on CPUs {}, {} pairs, {} in flight{}",
        settings.server_cpus.as_deref().unwrap_or("(any)"),
        settings.client_cpus.as_deref().unwrap_or("(any)"),
        settings.pairs,
        settings.concurrency,
        if settings.quick { ", quick" } else { "" }
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut notes = String::new();
    for (id, row) in in_process {
        match row {
            Some(Ok(row)) => rows.push(row),
            Some(Err(e)) => rows.push(failed(id, &e)),
            None => {}
        }
    }
    let needs_stack = [
        "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9d", "B10", "B14", "B15", "B17",
    ]
    .iter()
    .any(|m| wanted(m));
    if needs_stack {
        let mut fixture = Fixture::start(settings.clone()).await?;
        macro_rules! measure {
            ($id:expr, $call:expr) => {
                if wanted($id) {
                    eprintln!("{} …", $id);
                    let steal = StealMeter::start();
                    match $call.await.map(|row| stolen(row, steal)) {
                        Ok(row) => {
                            eprintln!("{}", report::render(std::slice::from_ref(&row)));
                            rows.push(row);
                        }
                        Err(e) => rows.push(failed($id, &e)),
                    }
                }
            };
        }
        measure!("B2", rpc::b2(&fixture));
        measure!("B3", rpc::b3(&fixture));
        if wanted("B4") {
            eprintln!("B4 …");
            let steal = StealMeter::start();
            match rpc::b4(&mut fixture).await {
                Ok(b4) => {
                    for row in b4 {
                        let row = stolen(row, steal);
                        eprintln!("{}", report::render(std::slice::from_ref(&row)));
                        rows.push(row);
                    }
                }
                Err(e) => rows.push(failed("B4", &e)),
            }
        }
        measure!("B5", batch::b5(&fixture));
        measure!("B14", metering::b14(&fixture));
        measure!("B15", metering::b15(&fixture));
        measure!("B6", replica::b6(&fixture));
        if wanted("B7") {
            eprintln!("B7 …");
            let steal = StealMeter::start();
            match list::b7(&fixture).await {
                Ok((row, plans)) => {
                    rows.push(stolen(row, steal));
                    notes.push_str(&plans);
                }
                Err(e) => rows.push(failed("B7", &e)),
            }
        }
        measure!("B9d", edge::b9d(&fixture));
        measure!("B10", edge::b10(&fixture));
        measure!("B17", audit::b17(&fixture));
        // Last: it seeds a million grants into this stack.
        measure!("B8", memory::b8(&mut fixture));
    }
    // The soak starts servers of its own (a fresh stack, then the all-in-one binary), after
    // the stack above has stopped.
    if wanted("B9") {
        for backend in [Backend::Stack, Backend::AllInOne] {
            eprintln!("{} …", backend.id());
            let steal = StealMeter::start();
            match soak::b9(&settings, backend, settings.soak).await {
                Ok(row) => {
                    let row = stolen(row, steal);
                    eprintln!("{}", report::render(std::slice::from_ref(&row)));
                    rows.push(row);
                }
                Err(e) => rows.push(failed(backend.id(), &e)),
            }
        }
    }
    if wanted("B12") {
        eprintln!("B12 …");
        let steal = StealMeter::start();
        match distribution::b12(settings.pairs, settings.quick).await {
            Ok(row) => {
                let row = stolen(row, steal);
                eprintln!("{}", report::render(std::slice::from_ref(&row)));
                rows.push(row);
            }
            Err(e) => rows.push(failed("B12", &e)),
        }
    }
    if wanted("B16") {
        eprintln!("B16 …");
        let steal = StealMeter::start();
        match webhooks::b16(&settings).await {
            Ok(row) => {
                let row = stolen(row, steal);
                eprintln!("{}", report::render(std::slice::from_ref(&row)));
                rows.push(row);
            }
            Err(e) => rows.push(failed("B16", &e)),
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", report::render(&rows))?;
    if !notes.is_empty() {
        writeln!(out, "{notes}")?;
    }
    Ok(())
}

/// Adds to a row's CPU cell the share of the machine's CPU time the hypervisor stole while it
/// was measured, so a noisy run says so.
fn stolen(mut row: Row, steal: StealMeter) -> Row {
    if let Some(percent) = steal.percent() {
        if !row.cpu.is_empty() {
            row.cpu.push_str("; ");
        }
        row.cpu.push_str(&format!("steal {percent:.0}%"));
    }
    row
}

/// The row of a measure that failed: each measure reports its own failure in the table and the
/// suite goes on.
fn failed(id: &'static str, e: &anyhow::Error) -> Row {
    eprintln!("{id} failed: {e:#}");
    Row {
        id,
        measure: format!("failed: {e:#}"),
        a: String::new(),
        b: String::new(),
        summary: None,
        unit: "",
        cpu: String::new(),
        target: String::new(),
        verdict: Verdict::Missed,
    }
}
