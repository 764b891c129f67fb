//! Running a parsed command against a gateway.

use std::io::{Read, Write};

use clap::CommandFactory;
use egw_proto::v1;
use egw_proto::v1::gateway_client::GatewayClient;
use egw_proto::yaml;
use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::args::{
    Cli, Command, DrainArgs, FlowsArgs, OutputFormat, ProtocolArg, RoutesCommand, StateArg,
    StatsArgs,
};
use crate::connect::{ConfigFile, Target};
use crate::error::{status_chain, tls_hint, CliError};
use crate::render;
use crate::views::{ApplyView, DrainView, FlowListView, FlowView, StatsView, StatusView};

/// The largest request egwctl sends; matches the gateway's default limit.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Stops `flows --all` if a misbehaving gateway never ends the listing.
const MAX_FLOW_PAGES: usize = 100_000;

/// Runs `cli`, writing results to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "egwctl", out);
        return Ok(());
    }
    if let Command::NatLog(command) = cli.command {
        return crate::natlog::run(command, cli.output, out);
    }
    let target = Target::resolve(&cli, ConfigFile::load(cli.config.as_deref())?)?;
    let channel = target.connect().await?;
    let mut client = GatewayClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let format = cli.output;
    let result = match cli.command {
        Command::Status => status(&mut client, format, out).await,
        Command::Routes(RoutesCommand::Get) => routes_get(&mut client, format, out).await,
        Command::Routes(RoutesCommand::Apply { file }) => {
            routes_apply(&mut client, &file, format, out).await
        }
        Command::Flows(args) => flows(&mut client, args, format, out).await,
        Command::Stats(args) => stats(&mut client, args, format, out).await,
        Command::Drain(args) => drain(&mut client, args, format, out).await,
        Command::Completion { .. } | Command::NatLog(_) => Ok(()),
    };
    result.map_err(|error| explain_transport(error, &target))
}

/// A call that failed below gRPC (connection reset, TLS alert) is reported
/// as a connection or TLS problem naming the address and files involved.
fn explain_transport(error: CliError, target: &Target) -> CliError {
    let CliError::Rpc(status) = &error else {
        return error;
    };
    if !matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Unavailable
    ) {
        return error;
    }
    let reason = status_chain(status);
    let lowered = reason.to_lowercase();
    match target {
        Target::Https { url, ca, cert, .. }
            if ["alert", "certificate", "tls", "handshake"]
                .iter()
                .any(|word| lowered.contains(word)) =>
        {
            CliError::Tls {
                server: url.clone(),
                hint: tls_hint(&reason, ca, cert),
                reason,
            }
        }
        _ if status.code() == tonic::Code::Unavailable => CliError::Unreachable {
            server: target.display(),
            reason,
        },
        _ => error,
    }
}

/// Writes a document as JSON or YAML, or the table text.
fn emit<T: Serialize>(
    out: &mut dyn Write,
    format: OutputFormat,
    document: &T,
    table: impl FnOnce() -> String,
) -> Result<(), CliError> {
    match format {
        OutputFormat::Table => out.write_all(table().as_bytes())?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, document)
                .map_err(|error| CliError::Reply(error.to_string()))?;
            out.write_all(b"\n")?;
        }
        OutputFormat::Yaml => {
            let text = serde_yaml::to_string(document)
                .map_err(|error| CliError::Reply(error.to_string()))?;
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

async fn status(
    client: &mut GatewayClient<Channel>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let reply = client
        .get_status(v1::GetStatusRequest {})
        .await?
        .into_inner();
    let view = StatusView::from(&reply);
    emit(out, format, &view, || render::status(&view))
}

async fn routes_get(
    client: &mut GatewayClient<Channel>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let reply = client
        .get_route_table(v1::GetRouteTableRequest {})
        .await?
        .into_inner();
    let table = reply
        .table
        .map(yaml::RouteTableDocument::try_from)
        .transpose()
        .map_err(|error| CliError::Reply(error.to_string()))?;
    emit(out, format, &table, || {
        render::route_table(table.as_ref(), reply.epoch)
    })
}

fn read_table_file(path: &std::path::Path) -> Result<yaml::RouteTableDocument, CliError> {
    let table_error = |problem: String| CliError::TableFile {
        path: path.to_owned(),
        problem,
    };
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| table_error(error.to_string()))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|error| table_error(error.to_string()))?
    };
    yaml::RouteTableDocument::from_yaml_str(&text).map_err(|error| table_error(error.to_string()))
}

async fn routes_apply(
    client: &mut GatewayClient<Channel>,
    path: &std::path::Path,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let table = read_table_file(path)?;
    let reply = client
        .apply_route_table(table.to_proto())
        .await?
        .into_inner();
    let view = ApplyView {
        generation: reply.generation,
        unchanged: reply.unchanged,
    };
    emit(out, format, &view, || render::applied(&view))
}

fn flows_request(args: &FlowsArgs) -> Result<v1::ListFlowsRequest, CliError> {
    let (external_ip, external_port) = match args.external.as_deref() {
        None => (None, None),
        Some(text) => match text.split_once(':') {
            Some((ip, port)) => {
                let port: u16 = port.parse().map_err(|_| {
                    CliError::Usage(format!(
                        "--external {text}: the port must be a number from 0 to 65535"
                    ))
                })?;
                (Some(ip.to_owned()), Some(u32::from(port)))
            }
            None => (Some(text.to_owned()), None),
        },
    };
    Ok(v1::ListFlowsRequest {
        pod_ip: args.pod.clone(),
        external_ip,
        external_port,
        destination_cidr: args.dst.clone(),
        protocol: match args.protocol {
            None => v1::Protocol::Unspecified,
            Some(ProtocolArg::Tcp) => v1::Protocol::Tcp,
            Some(ProtocolArg::Udp) => v1::Protocol::Udp,
            Some(ProtocolArg::Icmp) => v1::Protocol::Icmp,
        } as i32,
        state: match args.state {
            None => v1::FlowState::Unspecified,
            Some(StateArg::New) => v1::FlowState::New,
            Some(StateArg::Established) => v1::FlowState::Established,
            Some(StateArg::Closing) => v1::FlowState::Closing,
        } as i32,
        page_size: args.limit,
        page_token: String::new(),
    })
}

async fn flows(
    client: &mut GatewayClient<Channel>,
    args: FlowsArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut request = flows_request(&args)?;
    let mut flows = Vec::new();
    let mut next_page_token = None;
    for _ in 0..MAX_FLOW_PAGES {
        let page = client.list_flows(request.clone()).await?.into_inner();
        flows.extend(page.flows.iter().map(FlowView::from));
        if page.next_page_token.is_empty() {
            break;
        }
        if !args.all {
            next_page_token = Some(page.next_page_token);
            break;
        }
        request.page_token = page.next_page_token;
    }
    let view = FlowListView {
        flows,
        next_page_token,
    };
    emit(out, format, &view, || render::flows(&view))
}

async fn stats(
    client: &mut GatewayClient<Channel>,
    args: StatsArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let interval_ms = u32::try_from(args.interval.as_millis()).unwrap_or(u32::MAX);
    let mut stream = client
        .watch_stats(v1::WatchStatsRequest { interval_ms })
        .await?
        .into_inner();
    if !args.watch {
        let snapshot = stream
            .next()
            .await
            .ok_or_else(|| CliError::Reply("the stats stream ended without a snapshot".into()))??;
        let view = StatsView::from(&snapshot);
        return emit(out, format, &view, || render::stats(&view));
    }
    let mut previous: Option<StatsView> = None;
    let mut printed = 0u64;
    if format == OutputFormat::Table {
        out.write_all(render::watch_header().as_bytes())?;
    }
    while args.count.is_none_or(|count| printed < count) {
        let Some(snapshot) = stream.next().await else {
            break;
        };
        let view = StatsView::from(&snapshot?);
        match format {
            OutputFormat::Table => {
                out.write_all(render::watch_row(previous.as_ref(), &view).as_bytes())?
            }
            OutputFormat::Json => {
                serde_json::to_writer(&mut *out, &view)
                    .map_err(|error| CliError::Reply(error.to_string()))?;
                out.write_all(b"\n")?;
            }
            OutputFormat::Yaml => {
                let text = serde_yaml::to_string(&view)
                    .map_err(|error| CliError::Reply(error.to_string()))?;
                out.write_all(b"---\n")?;
                out.write_all(text.as_bytes())?;
            }
        }
        out.flush()?;
        previous = Some(view);
        printed += 1;
    }
    Ok(())
}

async fn drain(
    client: &mut GatewayClient<Channel>,
    args: DrainArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let reply = client
        .drain(v1::DrainRequest {
            external_ip: args.ip,
            undrain: args.undo,
        })
        .await?
        .into_inner();
    let view = DrainView {
        external_ip: reply.external_ip,
        draining: reply.draining,
        flows_remaining: reply.flows_remaining,
    };
    emit(out, format, &view, || render::drained(&view))
}
