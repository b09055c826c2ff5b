//! The Centrifugo client protocol, version 2, JSON encoding: commands in, replies and pushes
//! out, error codes, unsubscribe codes and disconnect codes.
//!
//! The shapes follow the Protobuf schema of the protocol (`Command`, `Reply`, `Push` and the
//! request/result messages): in JSON every message is an object whose keys are the schema's
//! field names, a `bytes` field (`data`) carries raw JSON, and zero values may be left out.
//!
//! A WebSocket message holds one or more commands separated by `\n`; replies and pushes
//! are batched the same way. A command with no id and no method (`{}`) is the client's
//! pong; a reply with no id and no push (`{}`) is the server's ping.
//!
//! Fields this server does not know are ignored, since SDKs send fields newer than a
//! server may know.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A client error in a reply (`{"id":N,"error":{...}}`). The connection stays open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientError {
    /// The protocol's code (100-1999 are the protocol's own).
    pub code: u32,
    /// The protocol's message for the code, or a more precise one.
    pub message: Cow<'static, str>,
    /// True when retrying later may succeed (the SDKs retry such errors by themselves).
    #[serde(skip_serializing_if = "is_false")]
    pub temporary: bool,
}

const fn client_error(code: u32, message: &'static str, temporary: bool) -> ClientError {
    ClientError {
        code,
        message: Cow::Borrowed(message),
        temporary,
    }
}

impl ClientError {
    /// 100: something went wrong in the server (here: Redis unavailable); temporary.
    pub const INTERNAL: ClientError = client_error(100, "internal server error", true);
    /// 101: no valid credentials.
    pub const UNAUTHORIZED: ClientError = client_error(101, "unauthorized", false);
    /// 102: the channel's namespace does not exist, or the name is invalid.
    pub const UNKNOWN_CHANNEL: ClientError = client_error(102, "unknown channel", false);
    /// 103: the rules do not allow this.
    pub const PERMISSION_DENIED: ClientError = client_error(103, "permission denied", false);
    /// 104: the command has no method this server knows.
    pub const METHOD_NOT_FOUND: ClientError = client_error(104, "method not found", false);
    /// 105: the client is already subscribed to the channel.
    pub const ALREADY_SUBSCRIBED: ClientError = client_error(105, "already subscribed", false);
    /// 106: a configured limit (channels per connection, message size) would be exceeded.
    pub const LIMIT_EXCEEDED: ClientError = client_error(106, "limit exceeded", false);
    /// 107: the command is malformed or out of order.
    pub const BAD_REQUEST: ClientError = client_error(107, "bad request", false);
    /// 108: the feature is not available here (history and presence).
    pub const NOT_AVAILABLE: ClientError = client_error(108, "not available", false);
    /// 109: the token has expired; the SDKs fetch a new one and retry.
    pub const TOKEN_EXPIRED: ClientError = client_error(109, "token expired", false);
    /// 110: the connection or subscription has expired.
    pub const EXPIRED: ClientError = client_error(110, "expired", false);
    /// 111: too many requests; temporary.
    pub const TOO_MANY_REQUESTS: ClientError = client_error(111, "too many requests", true);

    /// The same error with a more precise message.
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }
}

/// Why the server ends a connection: the WebSocket close code and reason, or the
/// `disconnect` push of a unidirectional connection.
///
/// Codes 3000-3499 and 4000-4499 advise the client to reconnect; 3500-3999 and 4500-4999
/// tell it not to (the SDKs follow that rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disconnect {
    /// The code.
    pub code: u16,
    /// A short reason (the WebSocket close reason is limited to 123 bytes).
    pub reason: Cow<'static, str>,
}

const fn disconnect(code: u16, reason: &'static str) -> Disconnect {
    Disconnect {
        code,
        reason: Cow::Borrowed(reason),
    }
}

impl Disconnect {
    /// 3000: the connection was closed (by the client, or its transport failed).
    pub const CONNECTION_CLOSED: Disconnect = disconnect(3000, "connection closed");
    /// 3001: the gateway is shutting down; reconnect (to this or another node).
    pub const SHUTDOWN: Disconnect = disconnect(3001, "shutdown");
    /// 3004: an internal error.
    pub const SERVER_ERROR: Disconnect = disconnect(3004, "internal server error");
    /// 3005: the connection token expired and was not refreshed in time.
    pub const EXPIRED: Disconnect = disconnect(3005, "connection expired");
    /// 3006: a subscription token expired and was not refreshed in time.
    pub const SUBSCRIPTION_EXPIRED: Disconnect = disconnect(3006, "subscription expired");
    /// 3008: the client did not read fast enough; its write queue overflowed.
    pub const SLOW: Disconnect = disconnect(3008, "slow");
    /// 3009: writing to the client failed.
    pub const WRITE_ERROR: Disconnect = disconnect(3009, "write error");
    /// 3010: the server lost messages for the client (Redis went away, or the channel
    /// fell behind); reconnecting restores its server-side subscriptions.
    pub const INSUFFICIENT_STATE: Disconnect = disconnect(3010, "insufficient state");
    /// 3011: the server asks the client to reconnect.
    pub const FORCE_RECONNECT: Disconnect = disconnect(3011, "force reconnect");
    /// 3012: the client did not answer a ping in time.
    pub const NO_PONG: Disconnect = disconnect(3012, "no pong");
    /// 3013: the client sent commands faster than allowed.
    pub const TOO_MANY_REQUESTS: Disconnect = disconnect(3013, "too many requests");
    /// 3500: the connection token is invalid.
    pub const INVALID_TOKEN: Disconnect = disconnect(3500, "invalid token");
    /// 3501: a malformed frame or a command out of order.
    pub const BAD_REQUEST: Disconnect = disconnect(3501, "bad request");
    /// 3502: no `connect` command within the allowed time.
    pub const STALE: Disconnect = disconnect(3502, "stale");
    /// 3503: disconnected by the server (API or application), not to reconnect.
    pub const FORCE_NO_RECONNECT: Disconnect = disconnect(3503, "force disconnect");
    /// 3504: too many connections.
    pub const CONNECTION_LIMIT: Disconnect = disconnect(3504, "connection limit");
    /// 3505: too many channels for one connection.
    pub const CHANNEL_LIMIT: Disconnect = disconnect(3505, "channel limit");
    /// 3507: not allowed.
    pub const PERMISSION_DENIED: Disconnect = disconnect(3507, "permission denied");
    /// 1009 (the WebSocket "message too big" close code, which the SDKs map to their
    /// message size limit error and do not reconnect after): a message larger than
    /// [`GatewayLimits::max_message_bytes`](crate::GatewayLimits::max_message_bytes).
    pub const MESSAGE_TOO_LARGE: Disconnect = disconnect(1009, "message too large");

    /// Whether the client is advised to reconnect.
    pub fn reconnect(&self) -> bool {
        !matches!(self.code, 1009 | 3500..=3999 | 4500..=4999)
    }
}

/// Why the server ends one subscription (the `unsubscribe` push). Codes below 2500 leave
/// the client unsubscribed; 2500 and above make the SDKs subscribe again by themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unsubscribe {
    /// The code.
    pub code: u32,
    /// A short reason.
    pub reason: Cow<'static, str>,
}

impl Unsubscribe {
    /// 2000: unsubscribed by the server (API or application).
    pub const SERVER: Unsubscribe = Unsubscribe {
        code: 2000,
        reason: Cow::Borrowed("server unsubscribe"),
    };
    /// 2500: the server lost messages for this subscription (Redis went away, or the
    /// channel fell behind): the SDK subscribes again.
    pub const INSUFFICIENT_STATE: Unsubscribe = Unsubscribe {
        code: 2500,
        reason: Cow::Borrowed("insufficient state"),
    };
    /// 2501: the subscription token expired and was not refreshed.
    pub const EXPIRED: Unsubscribe = Unsubscribe {
        code: 2501,
        reason: Cow::Borrowed("subscription expired"),
    };
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One command from a client. Only the first request field that is set is served.
#[derive(Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct Command {
    /// The id the reply carries; 0 for commands without a reply (pong, `send`).
    #[serde(default)]
    pub id: u32,
    /// `connect`.
    pub connect: Option<ConnectRequest>,
    /// `subscribe`.
    pub subscribe: Option<SubscribeRequest>,
    /// `unsubscribe`.
    pub unsubscribe: Option<ChannelRequest>,
    /// `publish`.
    pub publish: Option<PublishRequest>,
    /// `presence`.
    pub presence: Option<ChannelRequest>,
    /// `presence_stats`.
    pub presence_stats: Option<ChannelRequest>,
    /// `history`.
    pub history: Option<HistoryRequest>,
    /// `ping` (an explicit ping command, answered with an empty result).
    pub ping: Option<serde::de::IgnoredAny>,
    /// `send` (an asynchronous message to the server; no reply).
    pub send: Option<serde::de::IgnoredAny>,
    /// `rpc`.
    pub rpc: Option<serde::de::IgnoredAny>,
    /// `refresh`.
    pub refresh: Option<RefreshRequest>,
    /// `sub_refresh`.
    pub sub_refresh: Option<SubRefreshRequest>,
}

/// The method a [`Command`] asks for.
#[derive(Debug)]
#[non_exhaustive]
pub enum Method {
    /// An empty command: the answer to a server ping.
    Pong,
    /// `connect`.
    Connect(ConnectRequest),
    /// `subscribe`.
    Subscribe(SubscribeRequest),
    /// `unsubscribe`.
    Unsubscribe(ChannelRequest),
    /// `publish`.
    Publish(PublishRequest),
    /// `presence`.
    Presence(ChannelRequest),
    /// `presence_stats`.
    PresenceStats(ChannelRequest),
    /// `history`.
    History(HistoryRequest),
    /// `ping`.
    Ping,
    /// `send`.
    Send,
    /// `rpc`.
    Rpc,
    /// `refresh`.
    Refresh(RefreshRequest),
    /// `sub_refresh`.
    SubRefresh(SubRefreshRequest),
    /// A command with an id but no method this server knows.
    Unknown,
}

impl Command {
    /// The method, taking the request out of the command.
    pub fn method(&mut self) -> Method {
        if let Some(r) = self.connect.take() {
            Method::Connect(r)
        } else if let Some(r) = self.subscribe.take() {
            Method::Subscribe(r)
        } else if let Some(r) = self.unsubscribe.take() {
            Method::Unsubscribe(r)
        } else if let Some(r) = self.publish.take() {
            Method::Publish(r)
        } else if let Some(r) = self.presence.take() {
            Method::Presence(r)
        } else if let Some(r) = self.presence_stats.take() {
            Method::PresenceStats(r)
        } else if let Some(r) = self.history.take() {
            Method::History(r)
        } else if self.ping.take().is_some() {
            Method::Ping
        } else if self.send.take().is_some() {
            Method::Send
        } else if self.rpc.take().is_some() {
            Method::Rpc
        } else if let Some(r) = self.refresh.take() {
            Method::Refresh(r)
        } else if let Some(r) = self.sub_refresh.take() {
            Method::SubRefresh(r)
        } else if self.id == 0 {
            Method::Pong
        } else {
            Method::Unknown
        }
    }
}

/// `connect`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ConnectRequest {
    /// The connection token (JWT); empty for an anonymous connection.
    pub token: String,
    /// Subscriptions asked for at connect time. Served on unidirectional connections only
    /// (a bidirectional client subscribes with commands), under the same rules as
    /// `subscribe`.
    pub subs: BTreeMap<String, SubscribeRequest>,
    /// The client's application name.
    pub name: String,
    /// The client's application version.
    pub version: String,
}

/// `subscribe`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SubscribeRequest {
    /// The channel.
    pub channel: String,
    /// A subscription token (JWT), for channels whose rules require one.
    pub token: String,
    /// Whether the client asks to recover missed publications (needs history).
    pub recover: bool,
    /// The client's last known epoch, when recovering.
    pub epoch: String,
    /// The client's last known offset, when recovering.
    pub offset: u64,
    /// The subscription wants recovery (the SDKs' `recoverable` option).
    pub recoverable: bool,
    /// The subscription wants positioning (the SDKs' `positioned` option).
    pub positioned: bool,
}

/// A request that names only a channel (`unsubscribe`, `presence`, `presence_stats`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ChannelRequest {
    /// The channel.
    pub channel: String,
}

/// `publish`.
#[derive(Debug, Deserialize)]
#[non_exhaustive]
pub struct PublishRequest {
    /// The channel.
    #[serde(default)]
    pub channel: String,
    /// The payload: any JSON value, sent to Redis as its exact JSON text.
    pub data: Option<Box<RawValue>>,
}

/// `history`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct HistoryRequest {
    /// The channel.
    pub channel: String,
    /// Most publications to return.
    pub limit: i32,
    /// Return publications after this position.
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
}

/// A position in a channel's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StreamPosition {
    /// The offset.
    pub offset: u64,
    /// The epoch.
    pub epoch: String,
}

/// `refresh`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RefreshRequest {
    /// The new connection token.
    pub token: String,
}

/// `sub_refresh`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SubRefreshRequest {
    /// The channel.
    pub channel: String,
    /// The new subscription token.
    pub token: String,
}

/// Why a frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A line is not a JSON command object; the 0-based line and the decoder's message.
    Malformed {
        /// Which line.
        line: usize,
        /// What the JSON decoder said.
        error: String,
    },
    /// The frame has no command at all.
    Empty,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Malformed { line, error } => write!(f, "line {line}: {error}"),
            FrameError::Empty => f.write_str("no command in the frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Decodes one WebSocket text message into its commands (one JSON object per line; empty
/// lines are skipped). Never panics, whatever the input.
pub fn decode_frame(text: &str) -> Result<Vec<Command>, FrameError> {
    let mut commands = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let command: Command = serde_json::from_str(line).map_err(|e| FrameError::Malformed {
            line: i,
            error: e.to_string(),
        })?;
        commands.push(command);
    }
    if commands.is_empty() {
        return Err(FrameError::Empty);
    }
    Ok(commands)
}

/// The result of `connect` (and the `connect` push of unidirectional connections).
#[derive(Debug, Default, Serialize)]
#[non_exhaustive]
pub struct ConnectResult {
    /// The connection's id.
    pub client: String,
    /// The server's version.
    pub version: &'static str,
    /// Whether the connection expires (its token has `exp`).
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it expires, when it does.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
    /// Server-side subscriptions (the token's `channels`, and a unidirectional client's
    /// `subs`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    /// Ping interval in seconds.
    pub ping: u32,
    /// Whether the client must answer pings.
    #[serde(skip_serializing_if = "is_false")]
    pub pong: bool,
    /// The node's name.
    pub node: String,
}

/// The result of `subscribe`.
#[derive(Debug, Default, Serialize)]
#[non_exhaustive]
pub struct SubscribeResult {
    /// Whether the subscription expires (its token has `exp`).
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it expires, when it does.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
    /// The subscription can recover: the channel keeps history.
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// The channel's epoch (positioned or recoverable subscriptions).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// The missed publications, oldest first, when recovering.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Box<RawValue>>,
    /// Whether every missed publication is in `publications`.
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// The channel's last offset (positioned or recoverable subscriptions).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// The subscription is positioned.
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// The client asked to recover.
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The result of `refresh`.
#[derive(Debug, Default, Serialize)]
#[non_exhaustive]
pub struct RefreshResult {
    /// The connection's id.
    pub client: String,
    /// The server's version.
    pub version: &'static str,
    /// Whether the connection still expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it expires.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
}

/// The result of `sub_refresh`.
#[derive(Debug, Default, Serialize)]
#[non_exhaustive]
pub struct SubRefreshResult {
    /// Whether the subscription still expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it expires.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u32,
}

/// An empty result object (`unsubscribe`, `publish`, `ping`).
#[derive(Debug, Default, Serialize)]
pub struct Empty {}

/// Encodes a reply with a result: `{"id":N,"<method>":<result>}`.
pub fn reply<T: Serialize>(id: u32, method: &str, result: &T) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"id\":");
    out.push_str(&id.to_string());
    out.push_str(",\"");
    out.push_str(method);
    out.push_str("\":");
    out.push_str(&serde_json::to_string(result).unwrap_or_else(|_| "{}".into()));
    out.push('}');
    out
}

/// Encodes an error reply: `{"id":N,"error":{...}}`.
pub fn error_reply(id: u32, error: &ClientError) -> String {
    let body = serde_json::to_string(error).unwrap_or_else(|_| "{}".into());
    format!("{{\"id\":{id},\"error\":{body}}}")
}

/// The server's ping on a bidirectional connection, and the ping event of a
/// unidirectional one.
pub const PING: &str = "{}";

/// A push as a unidirectional connection receives it (no `Reply` wrapping).
pub fn unsubscribe_push(channel: &str, unsubscribe: &Unsubscribe) -> String {
    let body = serde_json::to_string(unsubscribe).unwrap_or_else(|_| "{}".into());
    format!(
        "{{\"channel\":{},\"unsubscribe\":{body}}}",
        json_string(channel)
    )
}

/// The `subscribe` push: a server-side subscription made after connect.
pub fn subscribe_push(channel: &str) -> String {
    format!(
        "{{\"channel\":{},\"subscribe\":{{}}}}",
        json_string(channel)
    )
}

/// The `disconnect` push (unidirectional connections; a WebSocket gets a close frame).
pub fn disconnect_push(d: &Disconnect) -> String {
    format!(
        "{{\"disconnect\":{{\"code\":{},\"reason\":{},\"reconnect\":{}}}}}",
        d.code,
        json_string(&d.reason),
        d.reconnect()
    )
}

/// The `connect` push of a unidirectional connection.
pub fn connect_push(result: &ConnectResult) -> String {
    format!(
        "{{\"connect\":{}}}",
        serde_json::to_string(result).unwrap_or_else(|_| "{}".into())
    )
}

/// Wraps a push for a bidirectional connection: `{"push":<push>}`.
pub fn wrap_push(push: &str) -> String {
    let mut out = String::with_capacity(push.len() + 9);
    out.push_str("{\"push\":");
    out.push_str(push);
    out.push('}');
    out
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_holds_several_commands_and_unknown_fields_are_ignored() {
        let text = "{\"id\":1,\"connect\":{\"token\":\"t\",\"future\":[1]}}\n{\"id\":2,\"subscribe\":{\"channel\":\"news\"},\"also_new\":true}\n{}\n";
        let mut commands = decode_frame(text).unwrap();
        assert_eq!(commands.len(), 3);
        assert!(matches!(commands[0].method(), Method::Connect(c) if c.token == "t"));
        assert!(matches!(commands[1].method(), Method::Subscribe(s) if s.channel == "news"));
        assert!(matches!(commands[2].method(), Method::Pong));
    }

    #[test]
    fn commands_without_a_known_method_are_unknown() {
        let mut commands = decode_frame("{\"id\":7,\"teleport\":{}}").unwrap();
        assert!(matches!(commands[0].method(), Method::Unknown));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(
            decode_frame("{\"id\":1}\nnot json"),
            Err(FrameError::Malformed { line: 1, .. })
        ));
        assert_eq!(decode_frame("\n \n").unwrap_err(), FrameError::Empty);
        assert!(decode_frame("[1,2]").is_err());
        assert!(decode_frame("{\"id\":-1}").is_err());
    }

    #[test]
    fn replies_have_the_schema_shapes() {
        assert_eq!(reply(3, "publish", &Empty {}), "{\"id\":3,\"publish\":{}}");
        assert_eq!(
            error_reply(4, &ClientError::INTERNAL),
            "{\"id\":4,\"error\":{\"code\":100,\"message\":\"internal server error\",\"temporary\":true}}"
        );
        assert_eq!(
            disconnect_push(&Disconnect::SHUTDOWN),
            "{\"disconnect\":{\"code\":3001,\"reason\":\"shutdown\",\"reconnect\":true}}"
        );
        assert!(!Disconnect::BAD_REQUEST.reconnect());
        assert!(Disconnect::SLOW.reconnect());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives, the decoder answers with commands or an error, never a panic.
        #[test]
        fn the_decoder_never_panics_on_arbitrary_text(text in ".{0,400}") {
            let _ = decode_frame(&text);
        }

        /// Lines shaped like commands, with random ids, methods, fields and garbage mixed
        /// in: decoding either fails or yields one command per non-empty line, and every
        /// command has a method.
        #[test]
        fn command_like_lines_decode_to_one_command_each(
            lines in proptest::collection::vec(
                (
                    any::<u32>(),
                    prop_oneof![
                        Just("connect"), Just("subscribe"), Just("publish"), Just("ping"),
                        Just("history"), Just("refresh"), Just("sub_refresh"), Just("nope"),
                        Just("unsubscribe"), Just("presence"), Just("send"), Just("rpc"),
                    ],
                    prop_oneof![
                        Just("{}".to_owned()),
                        Just(r#"{"channel":"c","data":{"a":[1,2]}}"#.to_owned()),
                        Just(r#"{"token":5}"#.to_owned()),
                        "[a-z{}:,\"0-9\\[\\]]{0,30}",
                    ],
                ),
                1..6,
            )
        ) {
            let text = lines
                .iter()
                .map(|(id, m, p)| format!("{{\"id\":{id},\"{m}\":{p},\"x\":null}}"))
                .collect::<Vec<_>>()
                .join("\n");
            if let Ok(mut commands) = decode_frame(&text) {
                prop_assert_eq!(commands.len(), lines.len());
                for c in &mut commands {
                    let _ = c.method();
                }
            }
        }

        /// Random bytes are not even text: the WebSocket layer refuses them, and
        /// the payload mapping still gives JSON for the same bytes from Redis.
        #[test]
        fn any_redis_payload_maps_to_one_json_line(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let push = crate::payload::publication_push("c", &bytes);
            prop_assert!(!push.contains('\n'));
            let value: serde_json::Value = serde_json::from_str(&push).unwrap();
            prop_assert!(value["pub"].get("data").is_some());
        }
    }
}
