//! `tracecov demo [--fault F]… [--exit]`: the collector, the sample shop, its integration suite
//! and the report, in one command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;

use crate::config::{self, ServeConfig};
use crate::demo::{self, Fault, ShopConfig};
use crate::ingest::now_ns;
use crate::query;
use crate::runs::{self, RunKind};
use crate::server::{Listeners, Server};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// A fault to inject (repeatable): payments:500, email:down, cart:422, users:401,
    /// inventory:slow, checkout:bad-response, inventory:consumer-error, inventory:lag (slower,
    /// fails no test), payments:double-charge (fails no test, breaks an expectation), or none.
    /// Default: payments:500 and email:down.
    #[arg(long = "fault", value_name = "F")]
    pub faults: Vec<Fault>,
    /// Stop after printing the report instead of serving the UI until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// The store (default: a fresh temporary directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub cors: super::serve::CorsArgs,
}

/// Binds `preferred`, or a free port on the same host when it is taken.
async fn bind_or_free(preferred: &str) -> anyhow::Result<(TcpListener, bool)> {
    let addr: SocketAddr = preferred.parse()?;
    match TcpListener::bind(addr).await {
        Ok(l) => Ok((l, true)),
        Err(_) => Ok((
            TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                .await
                .with_context(|| format!("cannot listen on {}", addr.ip()))?,
            false,
        )),
    }
}

fn step(msg: &str) {
    eprintln!("  \u{2022} {msg}");
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let faults: Vec<Fault> = if args.faults.is_empty() {
        demo::default_faults()
    } else {
        args.faults
            .into_iter()
            .filter(|f| *f != Fault::None)
            .collect()
    };
    let data = match args.data {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("tracecov-demo-{}", std::process::id())),
    };
    eprintln!("tracecov demo");
    step("starting the collector");
    let mut config = ServeConfig::ephemeral(&data);
    config.test_services = vec![demo::TEST_SERVICE.to_owned()];
    // The server's own report context (the UI, the API, `/metrics`) judges coverage against the
    // same built-in manifest as the report printed below.
    config.builtin_manifest = Some(crate::coverage::demo_manifest());
    config.cors_origins = args.cors.origins()?;
    let (grpc, g_std) = bind_or_free(config::DEFAULT_GRPC_ADDR).await?;
    let (http, h_std) = bind_or_free(config::DEFAULT_HTTP_ADDR).await?;
    let (ui, u_std) = bind_or_free(config::DEFAULT_UI_ADDR).await?;
    let listeners = Listeners { grpc, http, ui };
    let server = Server::start(config, listeners).await?;
    let a = server.addrs;
    if !(g_std && h_std && u_std) {
        step("some standard ports were taken: using free ones instead");
    }
    step(&format!(
        "OTLP/gRPC {}, OTLP/HTTP {}, UI {}",
        a.grpc,
        a.otlp_http_url(),
        a.ui_url()
    ));

    let reader = server.reader.clone();
    // The demo's own manifest (built into the binary) declares the shop's topology, a critical
    // edge the suite never exercises and a mocked service.
    let mut ctx = query::ReportContext::default();
    ctx.analysis.test_services = vec![demo::TEST_SERVICE.to_owned()];
    ctx.report.links = crate::links::LinkTemplate::tracecov(&a.ui_url());
    let ctx = ctx.with_manifest(crate::coverage::demo_manifest())?;
    let run = tokio::task::spawn_blocking({
        let reader = reader.clone();
        move || {
            reader.with_conn(|c| {
                runs::create_run(
                    c,
                    "demo",
                    RunKind::Explicit,
                    &runs::SuiteNames::named("demo"),
                    now_ns(),
                )
            })
        }
    })
    .await??;

    let names: Vec<String> = faults.iter().map(Fault::to_string).collect();
    step(&format!(
        "starting the shop (8 services, a SQLite database, a queue, an email provider) with faults: {}",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    ));
    let shop = demo::start(ShopConfig {
        otlp_endpoint: a.otlp_http_url(),
        faults: faults.clone(),
        resource_attributes: vec![(runs::RUN_ID_ATTR.to_owned(), run.id.clone())],
    })
    .await?;
    step(&format!(
        "running the integration suite ({} tests, concurrently)",
        demo::test_names().len()
    ));
    let suite = shop.run_suite().await;
    step("flushing the shop's spans");
    shop.shutdown().await?;

    let report = tokio::task::spawn_blocking({
        let reader = reader.clone();
        let run_id = run.id.clone();
        move || -> anyhow::Result<crate::report::Report> {
            reader.with_conn(|c| runs::close_run(c, &run_id, now_ns()))?;
            let run = query::resolve_run(&reader, &run_id)?;
            Ok(query::run_report(&reader, &run, &ctx)?)
        }
    })
    .await??;

    println!();
    println!(
        "Suite: {} passed, {} failed",
        suite.passed_count(),
        suite.tests.len() - suite.passed_count()
    );
    for t in &suite.tests {
        if !t.passed {
            println!("  FAILED {}: {}", t.name, t.message);
        }
    }
    println!();
    print!("{}", crate::report::text(&report));
    println!();
    println!("Store: {}", data.display());
    println!(
        "JSON report: curl {}/api/runs/{}/report",
        a.ui_url(),
        run.id
    );
    println!(
        "Run page (heatmap, service graph, failures): {}{}",
        a.ui_url(),
        crate::web::ui::href::run(&run.id)
    );
    if args.exit {
        server.shutdown().await?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Web UI at {} (open it in a browser), JSON API under {}/api — Ctrl-C to stop",
        a.ui_url(),
        a.ui_url()
    );
    let token = server.shutdown_token();
    tokio::spawn(async move {
        super::serve::wait_for_signal().await;
        token.cancel();
    });
    server.wait().await?;
    Ok(ExitCode::SUCCESS)
}
