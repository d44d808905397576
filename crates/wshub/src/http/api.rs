//! The admin API under `/api`: push messages, manage rooms and clients, read stats.
//!
//! Every error is `{"error": {"code", "message"}}` with the protocol's numeric error code
//! (the same numbers WebSocket clients see) and the matching HTTP status. Messages pushed
//! here reach clients exactly as if a client had sent them, with `sender_id` =
//! `admin.sender_id`. The OpenAPI document at `/api/openapi.json` is generated from the
//! handlers' annotations below, so it cannot drift from the routes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};
use wshub_protocol::messages::RoomMessageOut;
use wshub_protocol::{ErrorCode, MessageType};

use crate::hub::{Delivery, HubError};
use crate::ids::RoomId;
use crate::node::Node;

pub(super) fn routes(node: Arc<Node>) -> Router<Arc<Node>> {
    Router::new()
        .route("/broadcast", post(broadcast))
        .route("/broadcast/room", post(broadcast_room))
        .route("/clients", get(list_clients))
        .route("/clients/{id}", axum::routing::delete(disconnect_client))
        .route("/clients/{id}/messages", post(message_client))
        .route("/stats", get(stats))
        .route("/rooms", get(list_rooms).post(create_room))
        .route("/rooms/{id}", get(get_room).delete(delete_room))
        .route("/rooms/{id}/members", get(room_members))
        .route("/nodes", get(nodes))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(node, require_admin))
}

// ---- errors ----

/// An API failure: its HTTP status and the protocol error code in the body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidFormat, message)
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// The protocol error code (3000 room not found, 4000 client not found, ...).
    code: u16,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_u16(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        let status = match e {
            HubError::RoomNotFound | HubError::ClientNotFound | HubError::NotInRoom => {
                StatusCode::NOT_FOUND
            }
            HubError::RoomExists | HubError::AlreadyInRoom | HubError::RoomFull => {
                StatusCode::CONFLICT
            }
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<crate::fanout::PublishError> for ApiError {
    fn from(e: crate::fanout::PublishError) -> Self {
        match e {
            crate::fanout::PublishError::Hub(h) => h.into(),
            crate::fanout::PublishError::Bus(b) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Timeout,
                format!("delivered on this node only: {b}"),
            ),
            crate::fanout::PublishError::History(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Timeout,
                format!("room history unavailable, not published: {e}"),
            ),
            crate::fanout::PublishError::Encode(e) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::ServerError,
                format!("encoding failed: {e}"),
            ),
            crate::fanout::PublishError::Store(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Timeout,
                format!("cluster state unavailable: {e}"),
            ),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        tracing::error!(error = %e, "encoding an API message failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServerError,
            "internal server error",
        )
    }
}

/// A JSON body whose rejections are [`ApiError`]s: 413 for a body over `admin.max_body_size`,
/// 415 without `Content-Type: application/json`, 400 naming what is wrong with the JSON
/// (never quoting it: see `wshub_protocol::json_error`).
pub(crate) struct ApiJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidFormat,
                "expected Content-Type: application/json",
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::MessageTooLarge,
                    "request body is larger than admin.max_body_size",
                )
            } else {
                ApiError::bad_request("could not read the request body")
            }
        })?;
        serde_json::from_slice(&body).map(ApiJson).map_err(|e| {
            ApiError::bad_request(format!(
                "invalid JSON body: {}",
                wshub_protocol::json_error::describe(&e)
            ))
        })
    }
}

/// `application/json` or any `application/*+json`, parameters allowed.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .and_then(|subtype| subtype.strip_suffix("+json"))
            .is_some_and(|name| !name.is_empty())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::Unknown,
        "no such API route",
    )
}

// ---- admin credential ----

/// `/api/*` needs an admin credential: `Authorization: Bearer <admin.api_key>`, or a JWT
/// (verified like a client's) that grants `admin:system`. No credential: 401. A credential
/// that is neither: 403. With no API key and auth off, the API is open (developer default).
async fn require_admin(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let config = node.config();
    let key = config.admin.api_key.as_bytes();
    if key.is_empty() && !config.auth.enabled {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "admin credential required: Authorization: Bearer <admin.api_key or admin JWT>",
        )
        .into_response();
    };
    let key_ok = !key.is_empty() && bool::from(token.as_bytes().ct_eq(key));
    let jwt_ok = || {
        config.auth.enabled
            && node.verifier().verify(token).is_ok_and(|id| {
                id.permissions
                    .allows(crate::auth::Permission::AdminSystem, None)
            })
    };
    if key_ok || jwt_ok() {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "invalid admin credential",
        )
        .into_response()
    }
}

// ---- request and response bodies ----

#[derive(Deserialize, ToSchema)]
pub(crate) struct MessageBody {
    /// Any JSON: delivered as `data.content`.
    message: serde_json::Value,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct RoomMessageBody {
    room_id: String,
    /// Any JSON: delivered as `data.content`.
    message: serde_json::Value,
    /// A retry with the same key within `rooms.idempotency_window` is applied once (rooms
    /// with history).
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Delivered {
    /// Connections on this node the message was queued to.
    delivered: usize,
    /// The publication's offset in the room's history (rooms with history).
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

impl From<Delivery> for Delivered {
    fn from(d: Delivery) -> Self {
        Delivered {
            delivered: d.queued,
            offset: None,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateRoomBody {
    id: String,
    /// Defaults to the id.
    #[serde(default)]
    name: Option<String>,
    /// 0 = unlimited; defaults to `rooms.default_max_clients`.
    #[serde(default)]
    max_clients: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RoomView {
    id: String,
    name: String,
    max_clients: u32,
    members: usize,
}

impl From<wshub_protocol::messages::RoomInfo> for RoomView {
    fn from(r: wshub_protocol::messages::RoomInfo) -> Self {
        RoomView {
            id: r.id,
            name: r.name,
            max_clients: r.max_clients,
            members: r.members,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RoomsView {
    rooms: Vec<RoomView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct MemberView {
    client_id: String,
    /// The `info` claim of the member's token, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    info: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct MembersView {
    room_id: String,
    members: Vec<MemberView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ClientView {
    client_id: String,
    remote_addr: String,
    rooms: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ClientsView {
    clients: Vec<ClientView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct NodeView {
    node_id: String,
    /// Where the node listens (`cluster.advertise_addr`, else `server.addr`).
    addr: String,
    version: String,
    /// Connected clients, as of the node's last heartbeat (live for the node answering).
    clients: usize,
    /// Rooms with members on the node.
    rooms: usize,
    uptime_seconds: u64,
    /// Milliseconds since the node's last heartbeat.
    heartbeat_age_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct NodesView {
    nodes: Vec<NodeView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct StatsView {
    /// Connected clients, cluster-wide.
    clients: usize,
    /// Rooms in the cluster registry.
    rooms: usize,
    /// Live nodes.
    nodes: usize,
    /// Per-node breakdown.
    per_node: Vec<NodeView>,
}

async fn node_views(node: &Node) -> Vec<NodeView> {
    let now = crate::cluster::now_ms();
    node.live_nodes()
        .await
        .into_iter()
        .map(|n| NodeView {
            node_id: n.node_id,
            addr: n.addr,
            version: n.version,
            clients: n.clients,
            rooms: n.rooms,
            uptime_seconds: ((now - n.started_at_ms).max(0) / 1000) as u64,
            heartbeat_age_ms: (now - n.heartbeat_at_ms).max(0),
        })
        .collect()
}

fn room_id(id: &str) -> Result<RoomId, ApiError> {
    crate::dispatch::validate_room_id(id).map_err(|e| ApiError::bad_request(e.message.into_owned()))
}

// ---- handlers ----

/// Send a message to every client on every node, as a `broadcast` from `admin.sender_id`.
#[utoipa::path(post, path = "/api/broadcast", request_body = MessageBody,
    responses((status = 200, body = Delivered), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("admin" = [])))]
async fn broadcast(
    State(node): State<Arc<Node>>,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Json<Delivered>, ApiError> {
    let sender = node.config().admin.sender_id.clone();
    let content = serde_json::value::to_raw_value(&body.message)?;
    let frame = node
        .hub
        .sender_frame(MessageType::Broadcast, &content, &sender)?;
    Ok(Json(node.publish_broadcast(frame, None).await?.into()))
}

/// Send a `room_message` from `admin.sender_id` to every member of a room.
#[utoipa::path(post, path = "/api/broadcast/room", request_body = RoomMessageBody,
    responses((status = 200, body = Delivered), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("admin" = [])))]
async fn broadcast_room(
    State(node): State<Arc<Node>>,
    ApiJson(body): ApiJson<RoomMessageBody>,
) -> Result<Json<Delivered>, ApiError> {
    let room = room_id(&body.room_id)?;
    let sender = node.config().admin.sender_id.clone();
    let content = serde_json::value::to_raw_value(&body.message)?;
    let published = node
        .publish_room_message(
            room.as_str(),
            MessageType::RoomMessage.as_str(),
            &RoomMessageOut {
                content: &content,
                room_id: room.as_str(),
                sender_id: &sender,
                timestamp: wshub_protocol::now_millis(),
            },
            None,
            body.idempotency_key.as_deref(),
        )
        .await?;
    Ok(Json(Delivered {
        delivered: published.delivery.queued,
        offset: published.position.map(|p| p.offset),
    }))
}

/// Send a `direct_message` from `admin.sender_id` to one client.
#[utoipa::path(post, path = "/api/clients/{id}/messages", request_body = MessageBody,
    params(("id" = String, Path, description = "client id")),
    responses((status = 200, body = Delivered), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("admin" = [])))]
async fn message_client(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Json<Delivered>, ApiError> {
    let sender = node.config().admin.sender_id.clone();
    let content = serde_json::value::to_raw_value(&body.message)?;
    let frame = node
        .hub
        .sender_frame(MessageType::DirectMessage, &content, &sender)?;
    node.publish_direct(&id, frame).await?;
    Ok(Json(Delivered {
        delivered: 1,
        offset: None,
    }))
}

/// Cluster-wide counts with a per-node breakdown.
#[utoipa::path(get, path = "/api/stats", responses((status = 200, body = StatsView), (status = 503, body = ErrorBody)), security(("admin" = [])))]
async fn stats(State(node): State<Arc<Node>>) -> Result<Json<StatsView>, ApiError> {
    let per_node = node_views(&node).await;
    Ok(Json(StatsView {
        clients: per_node.iter().map(|n| n.clients).sum(),
        rooms: node.list_rooms().await?.len(),
        nodes: per_node.len(),
        per_node,
    }))
}

/// All rooms.
#[utoipa::path(get, path = "/api/rooms", responses((status = 200, body = RoomsView)), security(("admin" = [])))]
async fn list_rooms(State(node): State<Arc<Node>>) -> Result<Json<RoomsView>, ApiError> {
    Ok(Json(RoomsView {
        rooms: node
            .list_rooms()
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    }))
}

/// Create a room.
#[utoipa::path(post, path = "/api/rooms", request_body = CreateRoomBody,
    responses((status = 201, body = RoomView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin" = [])))]
async fn create_room(
    State(node): State<Arc<Node>>,
    ApiJson(body): ApiJson<CreateRoomBody>,
) -> Result<(StatusCode, Json<RoomView>), ApiError> {
    let id = room_id(&body.id)?;
    let info = node.create_room(id, body.name, body.max_clients).await?;
    Ok((StatusCode::CREATED, Json(info.into())))
}

/// One room.
#[utoipa::path(get, path = "/api/rooms/{id}", params(("id" = String, Path, description = "room id")),
    responses((status = 200, body = RoomView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
async fn get_room(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<RoomView>, ApiError> {
    Ok(Json(node.room_info(&id).await?.into()))
}

/// Delete a room; its members get `room_deleted`.
#[utoipa::path(delete, path = "/api/rooms/{id}", params(("id" = String, Path, description = "room id")),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("admin" = [])))]
async fn delete_room(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    node.delete_room(&id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Members of a room.
#[utoipa::path(get, path = "/api/rooms/{id}/members", params(("id" = String, Path, description = "room id")),
    responses((status = 200, body = MembersView), (status = 404, body = ErrorBody)), security(("admin" = [])))]
async fn room_members(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<MembersView>, ApiError> {
    let members = node.room_members(&id).await?;
    Ok(Json(MembersView {
        room_id: id,
        members: members
            .into_iter()
            .map(|m| MemberView {
                client_id: m.client_id,
                info: m.info,
            })
            .collect(),
    }))
}

/// Connected clients.
#[utoipa::path(get, path = "/api/clients", responses((status = 200, body = ClientsView)), security(("admin" = [])))]
async fn list_clients(State(node): State<Arc<Node>>) -> Json<ClientsView> {
    let clients = node
        .hub
        .client_ids()
        .into_iter()
        .filter_map(|id| node.hub.client(id.as_str()))
        .map(|c| {
            let mut rooms: Vec<String> = c.room_list().into_iter().map(|r| r.to_string()).collect();
            rooms.sort();
            ClientView {
                client_id: c.client_id.to_string(),
                remote_addr: c.remote.to_string(),
                rooms,
            }
        })
        .collect();
    Json(ClientsView { clients })
}

/// Disconnect a client (close 1000).
#[utoipa::path(delete, path = "/api/clients/{id}", params(("id" = String, Path, description = "client id")),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("admin" = [])))]
async fn disconnect_client(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    node.disconnect_client(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Live nodes with their load.
#[utoipa::path(get, path = "/api/nodes", responses((status = 200, body = NodesView)), security(("admin" = [])))]
async fn nodes(State(node): State<Arc<Node>>) -> Json<NodesView> {
    Json(NodesView {
        nodes: node_views(&node).await,
    })
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")), security(("admin" = [])))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

struct AdminSecurity;

impl utoipa::Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("admin.api_key"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the admin API.
#[derive(OpenApi)]
#[openapi(
    info(title = "wshub admin API", description = "Push messages, manage rooms and clients, read cluster stats."),
    paths(broadcast, broadcast_room, message_client, stats, list_rooms, create_room, get_room,
          delete_room, room_members, list_clients, disconnect_client, nodes, openapi_json),
    modifiers(&AdminSecurity)
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::is_json;

    fn with(content_type: &str) -> bool {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_str(content_type).unwrap_or_else(|_| unreachable!()),
        );
        is_json(&h)
    }

    #[test]
    fn json_content_types() {
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("application/+json"));
        assert!(!with("text/json"));
        assert!(!with("application/jsonx"));
        assert!(!is_json(&http::HeaderMap::new()));
    }
}
