//! The `ferry` binary: `ferry serve` runs a broker.

mod config;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "ferry", version, about = "One broker for Kafka, AMQP and MQTT clients")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (with no arguments: one node, data in ./data, Kafka on 127.0.0.1:9092).
    Serve(config::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(config::Settings::resolve(&args)?),
    }
}

fn serve(settings: config::Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let broker = ferry_broker::Broker::open(settings.broker.clone())
            .with_context(|| format!("opening data directory {}", settings.broker.data_dir.display()))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind(settings.kafka_listen)
            .await
            .with_context(|| format!("binding the Kafka listener to {}", settings.kafka_listen))?;
        tracing::info!(
            listen = %listener.local_addr()?,
            advertised = %format!("{}:{}", settings.kafka.advertised_host, settings.kafka.advertised_port),
            "kafka listener ready"
        );
        let ctx = Arc::new(ferry_kafka::Ctx { broker: broker.clone(), config: settings.kafka });
        let server = tokio::spawn(ferry_kafka::serve(listener, ctx, stop_rx.clone()));
        let (vhosts, amqp_server) = {
            let data = settings.broker.data_dir.clone();
            let (engine, names) = (settings.broker.engine.clone(), settings.amqp.vhosts.clone());
            let kafka_side = broker.clone();
            let vhosts = tokio::task::spawn_blocking(move || {
                ferry_broker::messaging::Vhosts::open(&data, engine, &names, ferry_amqp::hooks(Some(kafka_side)))
            })
            .await?
            .context("opening queues")?;
            let listener = tokio::net::TcpListener::bind(settings.amqp_listen)
                .await
                .with_context(|| format!("binding the AMQP listener to {}", settings.amqp_listen))?;
            tracing::info!(listen = %listener.local_addr()?, "amqp listener ready");
            let amqp =
                Arc::new(ferry_amqp::Server::new(settings.amqp, vhosts.clone(), settings.broker.data_dir.clone()));
            (vhosts, tokio::spawn(ferry_amqp::serve(listener, amqp, stop_rx)))
        };
        shutdown_signal().await?;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = server.await;
        let _ = amqp_server.await;
        // Flush, checkpoint and close every log; persist queue cursors.
        tokio::task::spawn_blocking(move || {
            vhosts.shutdown();
            broker.shutdown()
        })
        .await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
