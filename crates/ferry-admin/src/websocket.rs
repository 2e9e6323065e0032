//! WebSocket protocols on the HTTP listener (STOMP at `/stomp`): the
//! upgrade request is checked as on a WebSocket listener
//! ([`ferry_util::ws::check_upgrade`]), answered with 101 here, and the
//! upgraded connection handed to the protocol's route, which the binary
//! sets once the front-end runs ([`AdminState::set_ws_routes`]).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use ferry_util::ws::{Io, WsStream, check_upgrade};
use hyper_util::rt::TokioIo;

use crate::AdminState;
use crate::error::ApiError;

/// `GET <route path>` with an upgrade to WebSocket.
pub(crate) async fn upgrade(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let Some(route) = s.ws_route(req.uri().path()) else {
        return ApiError::not_found("no such endpoint").into_response();
    };
    if req.method() != Method::GET {
        return refuse("405 Method Not Allowed", "not GET");
    }
    if req.version() != Version::HTTP_11 {
        return refuse("505 HTTP Version Not Supported", "not HTTP/1.1");
    }
    let checked = {
        let headers = req.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        check_upgrade(headers, &route.endpoint)
    };
    let accepted = match checked {
        Ok(a) => a,
        Err((status, why)) => return refuse(status, why),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io: Box<dyn Io> = Box::new(TokioIo::new(upgraded));
                (route.handler)(WsStream::upgraded(io, &route.endpoint), peer).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "http websocket upgrade failed"),
        }
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accepted.accept);
    if let Some(p) = accepted.protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    response.body(Body::empty()).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The status of a refusal ("426 Upgrade Required") as a JSON error.
fn refuse(status: &str, why: &str) -> Response {
    let code = status.get(..3).and_then(|c| c.parse().ok()).and_then(|c| StatusCode::from_u16(c).ok());
    ApiError::new(code.unwrap_or(StatusCode::BAD_REQUEST), why).into_response()
}
