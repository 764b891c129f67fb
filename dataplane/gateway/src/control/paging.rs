//! ListFlows request validation and page tokens.
//!
//! A page token is 40 hex digits: the backend's [`FlowCursor`] (shard, position)
//! and a fingerprint of the filters and gateway epoch it was issued for, so a
//! token cannot be replayed with different filters, or against a restarted
//! gateway, and silently skip flows.

use std::net::Ipv4Addr;

use egw_proto::v1;
use ipnet::Ipv4Net;
use tonic::Status;

use super::api::{FlowCursor, FlowQuery};

/// Page size used when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size; larger requests are capped to it.
pub const MAX_PAGE_SIZE: usize = 1000;

const TOKEN_LEN: usize = 8 + 16 + 16;

/// Validates a ListFlows request into a backend query; `epoch` is the
/// gateway's (see [`crate::control::ControlBackend::epoch`]).
pub(crate) fn query_from_request(
    request: &v1::ListFlowsRequest,
    epoch: u64,
) -> Result<FlowQuery, Status> {
    let ip = |field: &str, value: &Option<String>| -> Result<Option<Ipv4Addr>, Status> {
        value
            .as_deref()
            .map(|text| {
                text.parse::<Ipv4Addr>().map_err(|_| {
                    Status::invalid_argument(format!("{field}: {text:?} is not an IPv4 address"))
                })
            })
            .transpose()
    };
    let external_port = request
        .external_port
        .map(|port| {
            u16::try_from(port).map_err(|_| {
                Status::invalid_argument(format!("external_port: {port} is larger than 65535"))
            })
        })
        .transpose()?;
    let destination = request
        .destination_cidr
        .as_deref()
        .map(|text| {
            text.parse::<Ipv4Net>()
                .or_else(|_| text.parse::<Ipv4Addr>().map(Ipv4Net::from))
                .map_err(|_| {
                    Status::invalid_argument(format!(
                        "destination_cidr: {text:?} is not an IPv4 CIDR"
                    ))
                })
        })
        .transpose()?;
    let protocol = match v1::Protocol::try_from(request.protocol) {
        Ok(v1::Protocol::Unspecified) => None,
        Ok(protocol) => Some(protocol),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "protocol: unknown value {}",
                request.protocol
            )))
        }
    };
    let state = match v1::FlowState::try_from(request.state) {
        Ok(v1::FlowState::Unspecified) => None,
        Ok(state) => Some(state),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "state: unknown value {}",
                request.state
            )))
        }
    };
    let limit = match usize::try_from(request.page_size) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(size) => size.min(MAX_PAGE_SIZE),
        Err(_) => MAX_PAGE_SIZE,
    };
    let mut query = FlowQuery {
        pod_ip: ip("pod_ip", &request.pod_ip)?,
        external_ip: ip("external_ip", &request.external_ip)?,
        external_port,
        destination,
        protocol,
        state,
        start: None,
        limit,
    };
    if !request.page_token.is_empty() {
        query.start = Some(decode_token(
            &request.page_token,
            filter_fingerprint(&query, epoch),
        )?);
    }
    Ok(query)
}

/// The page token resuming `query` at `cursor`.
pub(crate) fn encode_token(query: &FlowQuery, cursor: FlowCursor, epoch: u64) -> String {
    format!(
        "{:08x}{:016x}{:016x}",
        cursor.shard,
        cursor.position,
        filter_fingerprint(query, epoch)
    )
}

fn decode_token(token: &str, expected_fingerprint: u64) -> Result<FlowCursor, Status> {
    let malformed = || {
        Status::invalid_argument(
            "page_token: malformed; pass the next_page_token of a previous reply unchanged",
        )
    };
    if token.len() != TOKEN_LEN || !token.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    let shard = u32::from_str_radix(&token[..8], 16).map_err(|_| malformed())?;
    let position = u64::from_str_radix(&token[8..24], 16).map_err(|_| malformed())?;
    let fingerprint = u64::from_str_radix(&token[24..], 16).map_err(|_| malformed())?;
    if fingerprint != expected_fingerprint {
        return Err(Status::invalid_argument(
            "page_token: issued for different filters or by an earlier gateway process; \
             repeat the filters of the first request, or start again without a token",
        ));
    }
    Ok(FlowCursor { shard, position })
}

/// FNV-1a over a canonical rendering of the filters (not the page size: a
/// client may change it between pages).
fn filter_fingerprint(query: &FlowQuery, epoch: u64) -> u64 {
    let canonical = format!(
        "epoch={epoch};pod={:?};ext={:?};port={:?};dst={:?};proto={:?};state={:?}",
        query.pod_ip,
        query.external_ip,
        query.external_port,
        query.destination,
        query.protocol.map(|protocol| protocol as i32),
        query.state.map(|state| state as i32),
    );
    canonical
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: u64 = 0xe90c;

    #[test]
    fn page_size_defaults_and_caps() {
        let mut request = v1::ListFlowsRequest::default();
        assert_eq!(
            query_from_request(&request, EPOCH).unwrap().limit,
            DEFAULT_PAGE_SIZE
        );
        request.page_size = 5000;
        assert_eq!(
            query_from_request(&request, EPOCH).unwrap().limit,
            MAX_PAGE_SIZE
        );
        request.page_size = 7;
        assert_eq!(query_from_request(&request, EPOCH).unwrap().limit, 7);
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_filters() {
        let request = v1::ListFlowsRequest {
            pod_ip: Some("10.0.0.1".into()),
            ..Default::default()
        };
        let query = query_from_request(&request, EPOCH).unwrap();
        let cursor = FlowCursor {
            shard: 3,
            position: u64::MAX - 1,
        };
        let token = encode_token(&query, cursor, EPOCH);
        let resumed = query_from_request(
            &v1::ListFlowsRequest {
                page_token: token.clone(),
                ..request.clone()
            },
            EPOCH,
        )
        .unwrap();
        assert_eq!(resumed.start, Some(cursor));

        let other_filters = v1::ListFlowsRequest {
            pod_ip: Some("10.0.0.2".into()),
            page_token: token,
            ..Default::default()
        };
        let error = query_from_request(&other_filters, EPOCH).unwrap_err();
        assert!(error.message().contains("different filters"));

        let after_restart = v1::ListFlowsRequest {
            page_token: encode_token(&query, cursor, EPOCH),
            ..request
        };
        let error = query_from_request(&after_restart, EPOCH + 1).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn malformed_input_is_invalid_argument() {
        for request in [
            v1::ListFlowsRequest {
                pod_ip: Some("10.0.0.256".into()),
                ..Default::default()
            },
            v1::ListFlowsRequest {
                external_port: Some(70000),
                ..Default::default()
            },
            v1::ListFlowsRequest {
                destination_cidr: Some("10.0.0.0/40".into()),
                ..Default::default()
            },
            v1::ListFlowsRequest {
                protocol: 42,
                ..Default::default()
            },
            v1::ListFlowsRequest {
                state: -1,
                ..Default::default()
            },
            v1::ListFlowsRequest {
                page_token: "zz".into(),
                ..Default::default()
            },
            v1::ListFlowsRequest {
                page_token: "é".repeat(20),
                ..Default::default()
            },
        ] {
            let status = query_from_request(&request, EPOCH).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{request:?}");
        }
    }
}
