//! The `ferry` binary: `ferry serve` runs a broker; the other commands
//! manage and measure one (any Kafka-compatible broker) over the Kafka
//! protocol.

mod access;
mod bootstrap_users;
mod cli;
mod config;
mod data_lock;

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
    /// Run a broker (with no arguments: one node, data in ./data, Kafka on
    /// 127.0.0.1:9092, AMQP on 127.0.0.1:5672, MQTT on 127.0.0.1:1883, HTTP
    /// admin API and /metrics on 127.0.0.1:9644).
    Serve(Box<config::ServeArgs>),
    /// Create, list, describe, delete topics, alter their configs, reassign partitions.
    Topic(cli::TopicCmd),
    /// Write records: the arguments, or one per line of stdin.
    Produce(cli::ProduceArgs),
    /// Read records and print them.
    Consume(cli::ConsumeArgs),
    /// Consumer groups: list, describe (with lag), reset offsets, delete.
    Group(cli::GroupCmd),
    /// Redis streams and their consumer groups (over the Redis listener).
    Redis(cli::RedisCmd),
    /// STOMP connections and subscriptions (over the HTTP admin API).
    Stomp(cli::StompCmd),
    /// Cluster information.
    Cluster(cli::ClusterCmd),
    /// Take a node out of the cluster: decommission, remove.
    Node(cli::NodeCmd),
    /// SCRAM users: create, passwd, delete, list (on a running cluster, or
    /// before the first start with --data-dir).
    User(cli::UserCmd),
    /// ACLs: add, list, remove (Kafka's model, rpk's flags).
    Acl(cli::AclCmd),
    /// AMQP vhosts of the cluster: add, delete, list (over the HTTP admin API).
    Vhost(cli::VhostCmd),
    /// Measure throughput and latency: produce, consume, end to end.
    Bench(cli::bench::BenchCmd),
}

fn main() {
    let command = Cli::parse().command;
    let serving = matches!(command, Command::Serve(_));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                // openraft narrates every election and heartbeat at info;
                // its warnings and errors still show.
                .unwrap_or_else(|_| if serving { "info,openraft=warn" } else { "warn" }.into()),
        )
        .init();
    if let Err(e) = run(command) {
        // One line: the error and its causes.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    if let Command::Serve(args) = command {
        return serve(config::Settings::resolve(&args)?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match command {
            Command::Serve(_) => Ok(()),
            Command::Topic(cmd) => cli::topic::run(cmd).await,
            Command::Produce(args) => cli::produce::run(args).await,
            Command::Consume(args) => cli::consume::run(args).await,
            Command::Group(cmd) => cli::group::run(cmd).await,
            Command::Redis(cmd) => cli::redis::run(cmd).await,
            Command::Stomp(cmd) => cli::stomp::run(cmd).await,
            Command::Cluster(cmd) => cli::cluster(cmd).await,
            Command::Node(cmd) => cli::node::run(cmd).await,
            Command::User(cmd) => cli::user::run(cmd).await,
            Command::Acl(cmd) => cli::acl::run(cmd).await,
            Command::Vhost(cmd) => cli::vhost::run(cmd).await,
            Command::Bench(cmd) => cli::bench::run(cmd).await,
        }
    })
}

fn serve(settings: config::Settings) -> anyhow::Result<()> {
    // Before anything reads or writes the directory; held until return.
    let _data_lock = data_lock::acquire(&settings.broker.data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let broker = ferry_broker::Broker::open(settings.broker.clone())
            .with_context(|| format!("opening data directory {}", settings.broker.data_dir.display()))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        // One certificate for every TLS listener, reloaded in place.
        let tls = match &settings.tls {
            Some(t) => {
                let server = ferry_tls::TlsServer::new(t.files.clone(), t.mapper.clone())
                    .context("loading the TLS certificate (--tls-cert, --tls-key, --tls-client-ca)")?;
                let server = Arc::new(server);
                server.spawn_reloader(stop_rx.clone());
                Some(server)
            }
            None => None,
        };
        if let Some(peer) = &settings.cluster.tls {
            // The cluster port reloads like every listener, for the
            // connections it accepts and those it dials.
            peer.server.spawn_reloader(stop_rx.clone());
        }
        let tls_for = |l: &ferry_tls::Listen| if l.tls { tls.clone() } else { None };
        // Every port is bound first, so a taken one fails the start at once,
        // but only the HTTP side listens while the node joins the cluster:
        // /v1/health answers 503 with the reason, Kafka, AMQP and MQTT
        // clients are refused until the node has the metadata image.
        let mut kafka_sockets = Vec::with_capacity(settings.kafka_listeners.len());
        for (spec, advertised) in &settings.kafka_listeners {
            let socket = bind(spec.addr).with_context(|| format!("binding the Kafka listener {spec}"))?;
            kafka_sockets.push((socket, spec.clone(), advertised.clone()));
        }
        let mut mqtt_sockets = Vec::new();
        for (list, websocket, what) in [
            (&settings.mqtt_listen, false, "mqtt listener"),
            (&settings.mqtt_ws_listen, true, "mqtt websocket listener (path /mqtt)"),
        ] {
            for l in list {
                let socket = bind(l.addr).with_context(|| format!("binding the {what} to {l}"))?;
                mqtt_sockets.push((socket, websocket, tls_for(l), what));
            }
        }
        let mut stomp_sockets = Vec::new();
        for (list, websocket, what) in [
            (&settings.stomp_listen, false, "stomp listener"),
            (&settings.stomp_ws_listen, true, "stomp websocket listener (path /stomp)"),
        ] {
            for l in list {
                let socket = bind(l.addr).with_context(|| format!("binding the {what} to {l}"))?;
                stomp_sockets.push((socket, websocket, tls_for(l), what));
            }
        }
        let mut redis_sockets = Vec::new();
        for l in &settings.redis_listen {
            let socket = bind(l.addr).with_context(|| format!("binding the redis listener to {l}"))?;
            redis_sockets.push((socket, tls_for(l)));
        }
        let mut amqp_sockets = Vec::new();
        for l in &settings.amqp_listen {
            let socket = bind(l.addr).with_context(|| format!("binding the AMQP listener to {l}"))?;
            amqp_sockets.push((socket, tls_for(l)));
        }
        let http = bind(settings.http_listen.addr)
            .and_then(listen)
            .with_context(|| format!("binding the HTTP listener to {}", settings.http_listen))?;
        tracing::info!(listen = %http.local_addr()?, "http listener ready (admin API, /metrics)");
        let admin = ferry_admin::AdminState::new(broker.clone());
        // Logins for the other protocols and the HTTP API (it reads the
        // store as the metadata arrives, so it is ready before the node joins).
        let gate = access::gatekeeper(&broker, &settings.amqp.users, &settings.access);
        admin.set_auth(ferry_admin::security::HttpAuth { gate: gate.clone(), always: settings.security.is_some() });
        let http_server =
            tokio::spawn(ferry_admin::serve(http, tls_for(&settings.http_listen), admin.clone(), stop_rx.clone()));

        let cluster = settings.cluster.clone();
        tracing::info!(
            node = cluster.node_id,
            listen = %cluster.cluster_listen,
            voters = ?cluster.voters(),
            "joining the cluster"
        );
        let node = tokio::select! {
            started = ferry_cluster::ClusterNode::start(cluster, broker.clone()) => match started {
                Ok(node) => node,
                Err(e) => {
                    let _ = stop_tx.send(true);
                    let _ = http_server.await;
                    close(broker).await?;
                    return Err(e).context("joining the cluster");
                }
            },
            signal = shutdown_signal() => {
                signal?;
                tracing::info!("shutting down before the node joined the cluster");
                let _ = stop_tx.send(true);
                let _ = http_server.await;
                close(broker).await?;
                tracing::info!("stopped");
                return Ok(());
            }
        };
        tracing::info!(status = ?ferry_broker::metadata::Controller::status(&*node), "cluster node started");

        if let Err(e) = bootstrap_users::import(&broker, &settings.broker.data_dir).await {
            tracing::error!(error = %format!("{e:#}"), "bootstrap users not imported (the file stays for the next start)");
        }
        // One user store for AMQP, MQTT, STOMP and Redis: the config's
        // users go into it before any of their listeners accepts.
        let imported = access::import_config_users(&broker, &settings.amqp.users, &settings.access).await;
        if let Err(e) = imported.and_then(|()| access::check_anonymous_listeners(&settings, &gate)) {
            // Fail closed: a node whose listeners would be open (or whose
            // config contradicts itself) does not start.
            let _ = stop_tx.send(true);
            let _ = http_server.await;
            node.shutdown().await;
            close(broker).await?;
            return Err(e);
        }
        // Authorization is on with any SASL listener (or SSL listener with
        // client certificates); then every Kafka listener checks ACLs (a
        // PLAINTEXT client is User:ANONYMOUS).
        let security = settings.security.as_ref().map(|s| {
            tracing::info!(
                mechanisms = ?s.sasl_mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>(),
                super_users = ?s.authorizer.super_users.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "kafka authorization on"
            );
            Arc::new(ferry_kafka::KafkaSecurity {
                authorizer: Arc::new(ferry_broker::security::Authorizer::new(s.authorizer.clone(), broker.clone())),
                mechanisms: s.sasl_mechanisms.clone(),
                limiter: ferry_broker::security::LoginLimiter::new(),
                oauth: s.oauth.clone(),
            })
        });
        if let Some(jwks) = settings.security.as_ref().and_then(|s| s.oauth.clone()) {
            // Rotated identity-provider keys are taken without a restart.
            let files = vec![jwks.path().to_path_buf()];
            let every = ferry_util::reload::POLL_EVERY;
            ferry_util::reload::spawn_reloader("oauthbearer jwks", files, every, stop_rx.clone(), move || {
                jwks.reload().map_err(|e| e.to_string())
            });
        }
        let mut kafka_servers = Vec::with_capacity(kafka_sockets.len());
        for (socket, spec, advertised) in kafka_sockets {
            let listener = listen(socket)?;
            let (host, port) = advertised.rsplit_once(':').context("advertised address is not HOST:PORT")?;
            let config = ferry_kafka::KafkaConfig {
                advertised_host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
                advertised_port: port.parse().context("advertised port")?,
                protocol: spec.protocol,
                listener_key: config::kafka_listener_key(&spec),
                security: security.clone(),
                tls: if spec.protocol.tls() { tls.clone() } else { None },
                ..settings.kafka.clone()
            };
            tracing::info!(
                listen = %listener.local_addr()?,
                protocol = spec.protocol.name(),
                advertised = %advertised,
                "kafka listener ready"
            );
            let ctx = Arc::new(ferry_kafka::Ctx { broker: broker.clone(), config });
            kafka_servers.push(tokio::spawn(ferry_kafka::serve(listener, ctx, stop_rx.clone())));
        }
        let (vhosts, amqp_server, stomp_server, redis_server, mqtt) = {
            let data = settings.broker.data_dir.clone();
            let (engine, names) = (settings.broker.engine.clone(), settings.amqp.vhosts.clone());
            let mut hooks = ferry_amqp::hooks(Some(broker.clone()));
            hooks.default_queue_type = settings.amqp_default_queue_type;
            let vhosts =
                tokio::task::spawn_blocking(move || ferry_broker::messaging::Vhosts::open(&data, engine, &names, hooks))
            .await?
            .context("opening queues")?;
            let amqp = Arc::new(ferry_amqp::Server::new(
                settings.amqp,
                vhosts.clone(),
                gate.clone(),
                settings.broker.data_dir.clone(),
                broker.metrics(),
            ));
            let mut stomp_ws_routes = Vec::new();
            let stomp = if !stomp_sockets.is_empty() {
                let server = Arc::new(ferry_stomp::Server::new(
                    settings.stomp,
                    vhosts.clone(),
                    Some(broker.clone()),
                    gate.authenticator("stomp"),
                    broker.metrics(),
                ));
                // Listed on the admin API (`ferry stomp ...`) before clients can connect.
                let registry = server.registry.clone();
                admin.set_listing("/v1/stomp/connections", Arc::new(move || cli::stomp::connections_json(&registry)));
                let registry = server.registry.clone();
                admin.set_listing("/v1/stomp/subscriptions", Arc::new(move || cli::stomp::subscriptions_json(&registry)));
                let mut listeners = Vec::new();
                for (socket, websocket, tls, what) in stomp_sockets {
                    let socket = listen(socket)?;
                    tracing::info!(listen = %socket.local_addr()?, tls = tls.is_some(), "{what} ready");
                    listeners.push(ferry_stomp::Listener { socket, websocket, tls });
                }
                // STOMP over WebSocket at /stomp on the HTTP(S) and MQTT
                // WebSocket (ws://, wss://) listeners too (docs/protocols.md).
                stomp_ws_routes.push(ferry_stomp::ws_route(server.clone(), stop_rx.clone()));
                admin.set_ws_routes(stomp_ws_routes.clone());
                Some(tokio::spawn(ferry_stomp::serve(listeners, server, stop_rx.clone())))
            } else {
                None
            };
            let mqtt = if !mqtt_sockets.is_empty() {
                let config = ferry_mqtt::MqttConfig { gate: Some(gate.clone()), ..settings.mqtt.clone() };
                let hub = ferry_mqtt::Hub::open(broker.clone(), config)
                    .context("opening the MQTT session and retained-message stores")?;
                let mut listeners = Vec::new();
                for (socket, websocket, tls, what) in mqtt_sockets {
                    let socket = listen(socket)?;
                    tracing::info!(listen = %socket.local_addr()?, tls = tls.is_some(), "{what} ready");
                    listeners.push(ferry_mqtt::Listener { socket, websocket, tls });
                }
                Some(tokio::spawn(ferry_mqtt::serve(listeners, stomp_ws_routes, hub, stop_rx.clone())))
            } else {
                None
            };
            let redis = if redis_sockets.is_empty() {
                None
            } else {
                let server = Arc::new(ferry_redis::Server::new(
                    settings.redis,
                    vhosts.clone(),
                    broker.clone(),
                    gate.authenticator("redis"),
                    settings.broker.data_dir.clone(),
                    broker.metrics(),
                )?);
                let mut listeners = Vec::new();
                for (socket, tls) in redis_sockets {
                    let l = listen(socket)?;
                    tracing::info!(listen = %l.local_addr()?, tls = tls.is_some(), "redis listener ready");
                    listeners.push((l, tls));
                }
                Some(tokio::spawn(ferry_redis::serve(listeners, server, stop_rx.clone())))
            };
            // Ready before the last port answers: a health check that found
            // every port open never sees "not ready".
            admin.set_ready(true);
            let mut amqp_servers = Vec::new();
            for (socket, tls) in amqp_sockets {
                let listener = listen(socket)?;
                tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), "amqp listener ready");
                amqp_servers.push(tokio::spawn(ferry_amqp::serve(listener, tls, amqp.clone(), stop_rx.clone())));
            }
            (vhosts, amqp_servers, stomp, redis, mqtt)
        };
        shutdown_signal().await?;
        tracing::info!("shutting down");
        admin.set_ready(false);
        let _ = stop_tx.send(true);
        for server in kafka_servers {
            let _ = server.await;
        }
        let _ = http_server.await;
        if let Some(m) = mqtt {
            let _ = m.await;
        }
        for s in amqp_server {
            let _ = s.await;
        }
        if let Some(s) = stomp_server {
            let _ = s.await;
        }
        if let Some(r) = redis_server {
            let _ = r.await;
        }
        // Leave the cluster (stop heartbeats and Raft) before the logs close.
        node.shutdown().await;
        tokio::task::spawn_blocking(move || vhosts.shutdown()).await?;
        close(broker).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Flushes, checkpoints and closes every log (off the async workers).
async fn close(broker: Arc<ferry_broker::Broker>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || broker.shutdown()).await?;
    Ok(())
}

/// A socket bound to `addr` that does not accept connections yet.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Starts accepting on a bound socket, with a long accept queue: std's
/// (and so tokio's `bind`) is 128, and a reconnect storm of clients after
/// a restart overflows it, each dropped SYN costing its client a 1 s
/// retransmit (the kernel caps this at net.core.somaxconn).
fn listen(socket: tokio::net::TcpSocket) -> std::io::Result<tokio::net::TcpListener> {
    socket.listen(4096)
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
