//! `GET /openapi.json`: the HTTP API described as OpenAPI 3.1, generated from the code.
//!
//! Every operation comes from the `#[utoipa::path]` attribute on its handler, and every
//! body from a type that derives `ToSchema`: the forms are the very types the handlers
//! decode, `/readyz` answers with [`Readiness`](crate::health::Readiness) itself, and
//! `/state` and the answers that embed it serialize [`StateDocument`]
//! ([`crate::document`]); the tests validate live answers against those schemas
//! (including states with Redis down, pattern and binary deliveries and delivery gaps), and
//! `scripts/schemathesis` checks a running server against the whole document, so neither
//! side can drift unnoticed.
//!
//! The document is the same for every dashboard but for one thing: when an access token is
//! configured it declares the two ways to present it (bearer header, session cookie) and
//! requires one on every route but the health checks.
//!
//! Form schemas describe what the server accepts as far as JSON Schema can say it: the
//! patterns trim whitespace as the handlers do, refuse control characters where the
//! handlers do and bound the trimmed length (in characters). What they cannot say is in the
//! descriptions and in the 4xx answers each operation lists: limits counted in bytes (a
//! value within the pattern's character bound can still be over it: 413), the uniqueness
//! of subscriber names, the subscriber limit and the number of targets (400).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::openapi::schema::{AdditionalProperties, Object, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Schema};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::access::{PUBLIC_PATHS, TOKEN_COOKIE};
use crate::app::AppState;
pub use crate::document::{
    GapView, MessageView, ModeView, OtherDashboardsView, PayloadEncodingView, PeerDashboardView,
    PeerSubscriptionView, RedisAvailability, StateDocument, StatsView, StatusView,
    SubscriptionView,
};
use crate::limits::Limits;

/// Whitespace as Rust's `str::trim` sees it (Unicode `White_Space`), as a character-class
/// body. The form fields are trimmed with it before they are checked.
const WHITESPACE: &str = r"\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Control characters (`char::is_control`), refused inside names, channels and patterns.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";

/// A character that is neither whitespace nor a control character.
fn visible(extra_excluded: &str) -> String {
    format!(
        r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000{extra_excluded}]"
    )
}

/// What may stand between the first and the last visible character of an item of at most
/// `max` characters: `{0,max-2}` of `inner`, or nothing when `max` is 1.
fn middle(inner: &str, v: &str, max: usize) -> String {
    match max {
        0 | 1 => String::new(),
        _ => format!("({inner}{{0,{}}}{v})?", max - 2),
    }
}

/// One trimmed, non-empty item of at most `max` characters (after trimming) without control
/// characters; a `,` is excluded when `comma` is set, for the items of a list.
fn item_pattern(comma: bool, max: usize) -> String {
    let extra = if comma { "," } else { "" };
    let v = visible(extra);
    let inner = format!("[^{CONTROL}{extra}]");
    format!(
        "[{WHITESPACE}]*{v}{}[{WHITESPACE}]*",
        middle(&inner, &v, max)
    )
}

/// A subscriber name, or a channel to publish to: not empty after trimming, at most `max`
/// characters then, no control characters inside.
fn name_pattern(max: usize) -> String {
    format!("^{}$", item_pattern(false, max))
}

/// A `target` list: comma-separated items, each trimmed, empty ones dropped, at least one
/// left, none longer than `max` characters or with control characters inside.
fn targets_pattern(max: usize) -> String {
    let any_item = format!("([{WHITESPACE}]*|{})", item_pattern(true, max));
    format!("^({any_item},)*{}(,{any_item})*$", item_pattern(true, max))
}

/// Any text that is not empty after trimming.
fn not_blank_pattern() -> String {
    format!("[^{WHITESPACE}]")
}

fn text(description: String, pattern: String) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .build()
}

/// The `channel` of `POST /publish`, with `limits`.
pub(crate) fn channel_field(limits: &Limits) -> Object {
    text(
        format!(
            "The channel (trimmed; required). At most {} bytes after trimming \
             (`max_target_bytes`; the pattern can bound only characters: longer is a 413), no \
             control characters.",
            limits.max_target_bytes
        ),
        name_pattern(limits.max_target_bytes),
    )
}

/// The `message` of `POST /publish`, with `limits`.
pub(crate) fn message_field(limits: &Limits) -> Object {
    text(
        format!(
            "The message body (trimmed; required), sent as `{{\"body\": message, \"seq\": i, \
             \"of\": count}}`. At most {} bytes after trimming (`max_message_bytes`; longer \
             is a 413: a pattern bounding it would be too large for common regex engines).",
            limits.max_message_bytes
        ),
        not_blank_pattern(),
    )
}

/// The `count` of `POST /publish`, with `limits`.
pub(crate) fn count_field(limits: &Limits) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "How many times to publish: a number, clamped to 1..={}; absent, empty or not a \
             number counts as 1 (never refused).",
            limits.max_publish_count
        )))
        .build()
}

/// The `name` of `POST /subscribe`, with `limits`.
pub(crate) fn name_field(limits: &Limits) -> Object {
    text(
        format!(
            "The subscriber's name (trimmed; required; unique: a name in use is a 400). At \
             most {} bytes after trimming (`max_name_bytes`; the pattern can bound only \
             characters: longer is a 413), no control characters.",
            limits.max_name_bytes
        ),
        name_pattern(limits.max_name_bytes),
    )
}

/// The `kind` of `POST /subscribe`.
pub(crate) fn kind_field(_: &Limits) -> Object {
    text(
        "`channel` (the default, also when empty), `pattern`, or `shard` (additive: SSUBSCRIBE, \
         Redis 7 sharded pub/sub), trimmed; anything else is a 400."
            .into(),
        format!("^[{WHITESPACE}]*(channel|pattern|shard)?[{WHITESPACE}]*$"),
    )
}

/// The `kind` of `POST /publish` (additive).
pub(crate) fn publish_kind_field(_: &Limits) -> Object {
    text(
        "`channel` (the default, also when absent or empty: PUBLISH, as in the contract) or \
         `shard` (SPUBLISH, Redis 7 sharded pub/sub: reaches the `shard` subscribers), \
         trimmed; anything else is a 400. Additive."
            .into(),
        format!("^[{WHITESPACE}]*(channel|shard)?[{WHITESPACE}]*$"),
    )
}

/// The `target` of `POST /subscribe`, with `limits`.
pub(crate) fn target_field(limits: &Limits) -> Object {
    text(
        format!(
            "Comma-separated channels or patterns (required): items are trimmed and empty \
             ones dropped; at least one must be left. At most {} items \
             (`max_targets_per_subscription`; more is a 400) of at most {} bytes each \
             (`max_target_bytes`; the pattern can bound only characters: longer is a 413), no \
             control characters.",
            limits.max_targets_per_subscription, limits.max_target_bytes
        ),
        targets_pattern(limits.max_target_bytes),
    )
}

/// The `name` of `POST /unsubscribe`.
pub(crate) fn unsubscribe_name_field(_: &Limits) -> Object {
    text(
        "The subscriber to remove (trimmed; required). An unknown name is not an error: \
         `removed` is false."
            .into(),
        not_blank_pattern(),
    )
}

/// The default-limit field schemas, for `#[schema(schema_with = ...)]`.
pub(crate) mod default_fields {
    use super::*;

    pub(crate) fn channel() -> Object {
        channel_field(&Limits::default())
    }
    pub(crate) fn message() -> Object {
        message_field(&Limits::default())
    }
    pub(crate) fn count() -> Object {
        count_field(&Limits::default())
    }
    pub(crate) fn name() -> Object {
        name_field(&Limits::default())
    }
    pub(crate) fn kind() -> Object {
        kind_field(&Limits::default())
    }
    pub(crate) fn publish_kind() -> Object {
        publish_kind_field(&Limits::default())
    }
    pub(crate) fn target() -> Object {
        target_field(&Limits::default())
    }
    pub(crate) fn unsubscribe_name() -> Object {
        unsubscribe_name_field(&Limits::default())
    }
}

/// The schema of field `field` of the form type `form` with `limits`, for the fields whose
/// schema depends on them.
fn field_schema(form: &str, field: &str, limits: &Limits) -> Option<Object> {
    Some(match (form, field) {
        ("PublishForm", "channel") => channel_field(limits),
        ("PublishForm", "message") => message_field(limits),
        ("PublishForm", "count") => count_field(limits),
        ("SubscribeForm", "name") => name_field(limits),
        ("SubscribeForm", "target") => target_field(limits),
        _ => return None,
    })
}

/// The body of every error: `{"error": "<human readable message>"}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "channel is required"}))]
pub struct ErrorBody {
    /// What went wrong, for a person; never internals or secrets.
    pub error: String,
}

/// `GET /healthz`: the process answers.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct HealthStatus {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    pub status: String,
}

/// One event of `GET /events`, as a client's event-stream parser sees it (comments such as
/// the keep-alives are not events).
#[derive(Debug, Serialize, ToSchema)]
pub struct StateEvent {
    /// `state` (the first event of a stream) or `delta` (every later one).
    #[schema(pattern = "^(state|delta)$")]
    pub event: String,
    /// For `state`, the `GET /state` document ([`StateDocument`]) as JSON text; for
    /// `delta`, a [`StateDelta`] as JSON text.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// The data of `event: delta`: what turns the document a stream sent last into the newest
/// one (`docs/http-api.md`, "Deltas").
#[derive(Debug, Serialize, ToSchema)]
pub struct StateDelta {
    /// The `version` of the document it applies to: the one the stream sent last.
    pub base: u64,
    /// The `version` of the document it makes.
    pub version: u64,
    /// Every top-level field of the document other than `subscriptions` whose value
    /// changed, whole, under its own name (`version` is always among them).
    #[schema(value_type = Object)]
    pub set: serde_json::Map<String, serde_json::Value>,
    /// The names of the subscribers that are gone.
    pub removed: Vec<String>,
    /// One entry per subscriber added or changed, in name order.
    pub subscriptions: Vec<SubscriptionEntry>,
    /// Every subscriber's name in document order; present only when one was added.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub order: Option<Vec<String>>,
}

/// A subscriber in a [`StateDelta`]: whole (an added one), or a change of the one the
/// client has.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SubscriptionEntry {
    /// The whole subscriber, with `messages`: it replaces (or adds) the one of that name.
    Whole(SubscriptionView),
    /// A changed subscriber without `messages`: its new messages only.
    Change(SubscriptionChange),
}

/// A changed subscriber: every field of [`SubscriptionView`] but `messages`, whose new
/// list is `messages_new` followed by the old list, cut to `messages_kept` entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionChange {
    /// The subscriber's unique name.
    pub name: String,
    /// Its channels, patterns or shard channels.
    pub targets: Vec<String>,
    /// True for a pattern subscriber.
    pub is_pattern: bool,
    /// Messages received so far.
    pub received_total: u64,
    /// True while the subscriber is connected and subscribed.
    pub alive: bool,
    /// `channel`, `pattern` or `shard`.
    pub kind: String,
    /// The connection state.
    pub status: StatusView,
    /// Events dropped for its consumers that fell behind.
    pub dropped_total: u64,
    /// Reconnections after a lost connection.
    pub reconnects_total: u64,
    /// Windows in which it was disconnected, so far.
    pub gaps_total: u64,
    /// The newest such window, or `null`.
    pub last_gap: Option<GapView>,
    /// The messages received since the client's copy, newest first.
    #[schema(max_items = 15)]
    pub messages_new: Vec<MessageView>,
    /// How many messages the subscriber shows now: `messages_new` followed by the
    /// client's old `messages`, cut to this length.
    #[schema(maximum = 15)]
    pub messages_kept: u64,
}

/// `POST /publish`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishReply {
    /// The channel, trimmed.
    pub channel: String,
    /// How many publishes were made (`count` after clamping).
    #[schema(minimum = 1)]
    pub publishes: u32,
    /// What Redis returned for each PUBLISH, in order.
    pub delivered: Vec<i64>,
    /// `channel` (PUBLISH) or `shard` (SPUBLISH), as asked (additive).
    #[schema(pattern = "^(channel|shard)$")]
    pub kind: String,
    /// The state after publishing.
    pub state: StateDocument,
}

/// `POST /unsubscribe`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnsubscribeReply {
    /// Whether there was a subscriber of that name.
    pub removed: bool,
    /// The state after removing it.
    pub state: StateDocument,
}

/// The generated description of every route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pubsub-hub dashboard",
        description = "The Redis pub/sub guide's dashboard contract (`/state`, `/publish`, \
                       `/subscribe`, `/unsubscribe`, `/reset`), kept exactly, plus live push \
                       (`/events`) and operations routes (`/healthz`, `/readyz`, `/metrics`, \
                       `/openapi.json`). Every error is `{\"error\": \"...\"}`: 4xx for bad \
                       input, 5xx for a failure on the Redis side. Additive to the contract: \
                       sharded pub/sub (`kind=shard`), the connection mode, the shard view \
                       and the other dashboards on the same Redis in `/state`. Any route may answer 503 when the server already holds \
                       `max_connections` connections.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        crate::assets::index,
        crate::assets::script,
        crate::assets::style,
        crate::assets::favicon,
        crate::routes::state,
        crate::routes::publish,
        crate::routes::subscribe,
        crate::routes::unsubscribe,
        crate::routes::reset,
        crate::push::events,
        crate::routes::healthz,
        crate::health::readyz,
        crate::metrics::metrics,
        openapi_json,
    ),
    components(schemas(StateDelta)),
    modifiers(&FormExtras),
    tags(
        (name = "contract", description = "The guide's HTTP contract, kept exactly (docs/http-api.md)"),
        (name = "page", description = "The dashboard page and its assets"),
        (name = "push", description = "Live updates"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The form types' names in the document.
pub const FORMS: [&str; 3] = ["PublishForm", "SubscribeForm", "UnsubscribeForm"];

/// Says of every form that fields it does not know are accepted and ignored when they are
/// given once (a value, not a list: a field given twice is a 400).
struct FormExtras;

impl Modify for FormExtras {
    fn modify(&self, doc: &mut Document) {
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        for name in FORMS {
            if let Some(RefOr::T(Schema::Object(form))) = components.schemas.get_mut(name) {
                let extra = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("Fields the server does not know are ignored"))
                    .build();
                form.additional_properties = Some(Box::new(AdditionalProperties::RefOr(RefOr::T(
                    Schema::Object(extra),
                ))));
            }
        }
    }
}

/// Name of the bearer-token security scheme in the document.
pub const BEARER_SCHEME: &str = "bearerToken";
/// Name of the session-cookie security scheme in the document.
pub const COOKIE_SCHEME: &str = "sessionCookie";

/// The document for `app`: [`ApiDoc`], plus the security requirements (and the 429 of the
/// wrong-token limit) when `app` requires an access token.
pub fn document(app: &AppState) -> Document {
    let mut doc = ApiDoc::openapi();
    if *app.limits != Limits::default() {
        let components = doc.components.get_or_insert_with(Default::default);
        for (form, schema) in components.schemas.iter_mut() {
            let RefOr::T(Schema::Object(object)) = schema else {
                continue;
            };
            for (field, property) in object.properties.iter_mut() {
                if let Some(patched) = field_schema(form, field, &app.limits) {
                    *property = RefOr::T(Schema::Object(patched));
                }
            }
        }
    }
    if !app.access.requires_token() {
        return doc;
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The access token: `Authorization: Bearer <token>`"))
                .build(),
        ),
    );
    components.add_security_scheme(
        COOKIE_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            TOKEN_COOKIE,
            "Set by opening `/?token=<token>` once in a browser",
        ))),
    );
    let either = vec![
        utoipa::openapi::security::SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new()),
        utoipa::openapi::security::SecurityRequirement::new(COOKIE_SCHEME, Vec::<String>::new()),
    ];
    let too_many = utoipa::openapi::ResponseBuilder::new()
        .description(
            "Too many wrong access tokens from this client address: every request of it that \
             needs the token is refused until `Retry-After` seconds have passed",
        )
        .header(
            "Retry-After",
            utoipa::openapi::HeaderBuilder::new()
                .schema(Some(Object::with_type(Type::Integer)))
                .description(Some("Seconds to wait, at least 1"))
                .build(),
        )
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = PUBLIC_PATHS.contains(&path.as_str());
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(if public {
                // An empty requirement: no credentials needed.
                vec![utoipa::openapi::security::SecurityRequirement::default()]
            } else {
                operation
                    .responses
                    .responses
                    .insert("429".into(), RefOr::T(too_many.clone()));
                either.clone()
            });
        }
    }
    doc
}

/// `GET /openapi.json`: this document.
///
/// # Cancel safety
/// Cancel-safe: it only reads, and holds no lock across an `.await`; dropping it leaves
/// nothing behind.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this server",
         content_type = "application/json", body = Object),
        (status = 401, description = "An access token is configured and was not presented",
         body = ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)",
         body = ErrorBody),
    )
)]
pub async fn openapi_json(State(app): State<AppState>) -> Json<Document> {
    Json(document(&app))
}
