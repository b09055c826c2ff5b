//! One connection's protocol state and command handling, shared by the WebSocket and SSE
//! transports: connect and tokens, subscriptions, publish, refresh, pings, expiry, the
//! command rate, and what the node tells the connection (lost channels, API unsubscribes).
//!
//! The session is owned by the connection's task; nothing else touches its subscriptions.
//! Others reach it through its [`Client`] handle: the write queue, and the control inbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::time::Instant;

use crate::auth::{TokenError, now_secs, ttl_until};
use crate::config::{ChannelRules, PublishPolicy, SubscribePolicy};
use crate::features::{FeatureError, HistoryPage, HistoryQuery, PresenceEntry};
use crate::gateway::{Inner, VERSION};
use crate::metrics::GatewayMetrics;
use crate::node::{Client, Control, JoinError};
use crate::payload::publication_json;
use crate::presence::join_leave_event;
use crate::protocol::{
    self, ChannelRequest, ClientError, Command, ConnectRequest, ConnectResult, Disconnect, Empty,
    HistoryRequest, Method, PublishRequest, RefreshRequest, RefreshResult, StreamPosition,
    SubRefreshRequest, SubRefreshResult, SubscribeRequest, SubscribeResult, Unsubscribe,
};
use serde_json::value::RawValue;

/// One subscription of this connection.
struct SubEntry {
    /// The node's channel generation, to tell a stale `Lost` from a current one.
    generation: u64,
    /// Made by the server (token `channels`, or a unidirectional connect's `subs`): the
    /// client cannot subscribe again by itself.
    server_side: bool,
    /// The subscription token's expiry, Unix seconds.
    exp: Option<u64>,
    /// The channel keeps presence: this client is in it while subscribed.
    presence: bool,
    /// The channel announces joins and leaves.
    join_leave: bool,
}

impl SubEntry {
    /// A subscription joined at `generation`, with the channel's presence rules.
    fn new(generation: u64, server_side: bool, exp: Option<u64>, rules: &ChannelRules) -> Self {
        SubEntry {
            generation,
            server_side,
            exp,
            presence: rules.presence,
            join_leave: rules.join_leave,
        }
    }
}

/// Why a connect failed.
#[derive(Debug)]
pub(crate) enum ConnectFail {
    /// Answer with this error; the connection stays open (unconnected).
    Error(ClientError),
    /// End the connection with this disconnect.
    Disconnect(Disconnect),
}

/// What woke the connection's task, besides its transport.
#[derive(Debug)]
pub(crate) enum Wake {
    /// A message from the node or the server API.
    Control(Control),
    /// The write queue was closed (slow, API disconnect, shutdown).
    Closed,
    /// Time for a server ping.
    Ping,
    /// No pong in time.
    NoPong,
    /// No connect in time.
    Stale,
    /// The connection token expired.
    Expired,
    /// A subscription token expired.
    SubExpired(String),
    /// Time to refresh this connection's presence entries.
    PresenceRefresh,
}

/// A token bucket for the command rate.
struct Bucket {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Bucket {
            tokens: f64::from(rate),
            rate: f64::from(rate),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) struct Session {
    gw: Arc<Inner>,
    pub(crate) client: Arc<Client>,
    connected: bool,
    /// The connection token's expiry, Unix seconds.
    exp: Option<u64>,
    /// The connection token's `info` claim (JSON text), shown in presence and joins.
    conn_info: Option<String>,
    subs: HashMap<String, SubEntry>,
    /// When this connection next refreshes its presence entries (every third of
    /// `presence_ttl`, so that two refreshes can be lost before an entry expires).
    presence_refresh_at: Instant,
    /// When a presence call last failed: for [`PRESENCE_BACKOFF`] after it, this connection
    /// skips the store (entries then expire or are added at the next refresh), so a Redis
    /// outage costs it one timeout, not one per channel.
    presence_failed_at: Option<Instant>,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    connect_deadline: Instant,
    bucket: Bucket,
    finished: bool,
    /// Positions to recover server-side subscriptions from at connect (a unidirectional
    /// client's `Last-Event-ID`), by channel.
    pub(crate) resume: BTreeMap<String, StreamPosition>,
    /// Where each server-side subscription to a channel with history starts once the
    /// connect reply is out, by channel (the SSE transport's first event id).
    pub(crate) positions: BTreeMap<String, StreamPosition>,
}

impl Session {
    /// A new connection, counted against the connection limit; `None` when the gateway is
    /// full or shutting down (the disconnect to send is returned instead).
    pub(crate) fn open(gw: &Arc<Inner>, uni: bool) -> Result<Session, Disconnect> {
        if gw.closing.is_cancelled() {
            return Err(Disconnect::SHUTDOWN);
        }
        let metrics = &gw.metrics;
        let max = gw.config.limits.max_connections as u64;
        let before = metrics
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if before >= max {
            GatewayMetrics::dec(&metrics.connections);
            GatewayMetrics::inc(&metrics.connection_limit_refusals_total);
            return Err(Disconnect::CONNECTION_LIMIT);
        }
        GatewayMetrics::inc(&metrics.connections_total);
        let limits = &gw.config.limits;
        let client = Client::new(
            uni,
            limits.write_queue_messages,
            limits.write_queue_bytes,
            Arc::clone(metrics),
        );
        gw.node.add_client(&client);
        // A shutdown that began meanwhile may have told every client before this one was
        // registered: checked again after registering (the registry's lock orders the two).
        if gw.closing.is_cancelled() {
            gw.node.remove_client(client.id);
            GatewayMetrics::dec(&metrics.connections);
            return Err(Disconnect::SHUTDOWN);
        }
        let now = Instant::now();
        Ok(Session {
            gw: Arc::clone(gw),
            client,
            connected: false,
            exp: None,
            conn_info: None,
            subs: HashMap::new(),
            presence_refresh_at: now + presence_refresh_interval(&gw.config),
            presence_failed_at: None,
            next_ping: now + gw.config.ping_interval,
            pong_deadline: None,
            connect_deadline: now + limits.connect_timeout,
            bucket: Bucket::new(limits.max_commands_per_second),
            finished: false,
            resume: BTreeMap::new(),
            positions: BTreeMap::new(),
        })
    }

    /// The earliest timer and what it means.
    fn next_deadline(&self) -> (Instant, Wake) {
        if !self.connected {
            return (self.connect_deadline, Wake::Stale);
        }
        let mut best = (self.next_ping, Wake::Ping);
        if let Some(d) = self.pong_deadline
            && d < best.0
        {
            best = (d, Wake::NoPong);
        }
        let grace = self.gw.config.expired_close_delay;
        if let Some(exp) = self.exp {
            let at = instant_of(exp) + grace;
            if at < best.0 {
                best = (at, Wake::Expired);
            }
        }
        if self.presence_refresh_at < best.0 && self.subs.values().any(|s| s.presence) {
            best = (self.presence_refresh_at, Wake::PresenceRefresh);
        }
        for (channel, sub) in &self.subs {
            if let Some(exp) = sub.exp {
                let at = instant_of(exp) + grace;
                if at < best.0 {
                    best = (at, Wake::SubExpired(channel.clone()));
                }
            }
        }
        best
    }

    /// Waits for the next event that is not the transport's.
    ///
    /// # Cancel safety
    /// Cancel safe: a control message is only taken when this returns it, and timers are
    /// recomputed on every call.
    pub(crate) async fn wake(&mut self) -> Wake {
        let (at, what) = self.next_deadline();
        let closed = self.client.queue.closed_token();
        tokio::select! {
            biased;
            _ = closed.cancelled() => Wake::Closed,
            control = self.client.control.recv() => Wake::Control(control),
            _ = tokio::time::sleep_until(at) => what,
        }
    }

    /// Acts on a wake-up; an `Err` ends the connection with that disconnect.
    pub(crate) async fn on_wake(&mut self, wake: Wake) -> Result<(), Disconnect> {
        match wake {
            Wake::Closed => Err(self
                .client
                .queue
                .close_reason()
                .unwrap_or(Disconnect::CONNECTION_CLOSED)),
            Wake::Control(c) => self.on_control(c).await,
            Wake::Ping => {
                self.client.send(Arc::from(protocol::PING));
                self.next_ping = Instant::now() + self.gw.config.ping_interval;
                if !self.client.uni && self.pong_deadline.is_none() {
                    self.pong_deadline = Some(Instant::now() + self.gw.config.pong_timeout);
                }
                Ok(())
            }
            Wake::NoPong => Err(Disconnect::NO_PONG),
            Wake::Stale => Err(Disconnect::STALE),
            Wake::Expired => Err(Disconnect::EXPIRED),
            Wake::PresenceRefresh => {
                self.presence_refresh_at =
                    Instant::now() + presence_refresh_interval(&self.gw.config);
                let entry = self.presence_entry();
                let channels: Vec<(String, bool)> = self
                    .subs
                    .iter()
                    .filter(|(_, s)| s.presence)
                    .map(|(c, s)| (c.clone(), s.join_leave))
                    .collect();
                for (channel, join_leave) in channels {
                    if !self.presence_reachable() {
                        break;
                    }
                    let redis = self.gw.redis_channel(&channel);
                    let refreshed = self.gw.presence_add(&redis, &entry, join_leave, true);
                    if let Err(e) = refreshed.await {
                        self.presence_failed_at = Some(Instant::now());
                        tracing::warn!(%channel, error = ?e, "presence refresh failed; retried at the next one");
                    }
                }
                Ok(())
            }
            Wake::SubExpired(channel) => {
                if let Some(sub) = self.subs.remove(&channel) {
                    self.gw
                        .node
                        .leave(&channel, sub.generation, self.client.id)
                        .await;
                    self.left(&channel, &sub).await;
                    if sub.server_side || self.client.uni {
                        return Err(Disconnect::SUBSCRIPTION_EXPIRED);
                    }
                    self.client
                        .send_push(&protocol::unsubscribe_push(&channel, &Unsubscribe::EXPIRED));
                }
                Ok(())
            }
        }
    }

    async fn on_control(&mut self, control: Control) -> Result<(), Disconnect> {
        match control {
            Control::Lost {
                channel,
                generation,
            } => {
                let current = self.subs.get(&channel).map(|s| s.generation);
                if current != Some(generation) {
                    return Ok(());
                }
                let sub = self.subs.remove(&channel).expect("checked above");
                self.gw
                    .node
                    .leave(&channel, generation, self.client.id)
                    .await;
                self.left(&channel, &sub).await;
                if sub.server_side || self.client.uni {
                    return Err(Disconnect::INSUFFICIENT_STATE);
                }
                self.client.send_push(&protocol::unsubscribe_push(
                    &channel,
                    &Unsubscribe::INSUFFICIENT_STATE,
                ));
                Ok(())
            }
            Control::Unsubscribe { channel } => {
                if let Some(sub) = self.subs.remove(&channel) {
                    self.gw
                        .node
                        .leave(&channel, sub.generation, self.client.id)
                        .await;
                    self.left(&channel, &sub).await;
                    self.client
                        .send_push(&protocol::unsubscribe_push(&channel, &Unsubscribe::SERVER));
                }
                Ok(())
            }
        }
    }

    /// Handles one WebSocket text message; an `Err` ends the connection.
    pub(crate) async fn on_frame(&mut self, text: &str) -> Result<(), Disconnect> {
        // Any traffic shows the client is alive, as a pong does.
        self.pong_deadline = None;
        let commands = match protocol::decode_frame(text) {
            Ok(c) => c,
            Err(e) => {
                GatewayMetrics::inc(&self.gw.metrics.bad_frames_total);
                tracing::debug!(client = %self.client.client_id, error = %e, "bad frame");
                return Err(Disconnect::BAD_REQUEST);
            }
        };
        for command in commands {
            if !self.bucket.take() {
                return Err(Disconnect::TOO_MANY_REQUESTS);
            }
            self.on_command(command).await?;
        }
        Ok(())
    }

    fn answer(&self, id: u32, line: String) {
        if id != 0 {
            self.client.send(Arc::from(line));
        }
    }

    fn fail(&self, id: u32, error: &ClientError) {
        GatewayMetrics::inc(&self.gw.metrics.command_errors_total);
        self.answer(id, protocol::error_reply(id, error));
    }

    async fn on_command(&mut self, mut command: Command) -> Result<(), Disconnect> {
        let id = command.id;
        let method = command.method();
        if !self.connected {
            return match method {
                Method::Connect(request) if id != 0 => match self.connect(request).await {
                    Ok(result) => {
                        let reply = protocol::reply(id, "connect", &result);
                        self.client.queue.release(Some(Arc::from(reply)), false);
                        Ok(())
                    }
                    Err(ConnectFail::Error(e)) => {
                        GatewayMetrics::inc(&self.gw.metrics.command_errors_total);
                        let reply = protocol::error_reply(id, &e);
                        self.client.queue.release(Some(Arc::from(reply)), true);
                        Ok(())
                    }
                    Err(ConnectFail::Disconnect(d)) => Err(d),
                },
                // A pong before connect is harmless; anything else is out of order.
                Method::Pong => Ok(()),
                _ => {
                    GatewayMetrics::inc(&self.gw.metrics.bad_frames_total);
                    Err(Disconnect::BAD_REQUEST)
                }
            };
        }
        let needs_id = !matches!(method, Method::Pong | Method::Send);
        if needs_id && id == 0 {
            GatewayMetrics::inc(&self.gw.metrics.bad_frames_total);
            return Err(Disconnect::BAD_REQUEST);
        }
        match method {
            Method::Pong | Method::Send => {}
            Method::Connect(_) => {
                GatewayMetrics::inc(&self.gw.metrics.bad_frames_total);
                return Err(Disconnect::BAD_REQUEST);
            }
            Method::Subscribe(r) => self.subscribe(id, r).await,
            Method::Unsubscribe(r) => self.unsubscribe(id, r).await,
            Method::Publish(r) => self.publish(id, r).await,
            Method::Presence(r) => self.presence(id, r, false).await,
            Method::PresenceStats(r) => self.presence(id, r, true).await,
            Method::History(r) => self.history(id, r).await,
            Method::Ping => self.answer(id, protocol::reply(id, "ping", &Empty {})),
            Method::Refresh(r) => self.refresh(id, r)?,
            Method::SubRefresh(r) => self.sub_refresh(id, r),
            Method::Rpc | Method::Unknown => self.fail(id, &ClientError::METHOD_NOT_FOUND),
        }
        Ok(())
    }

    /// Authenticates and makes the server-side subscriptions; on success the connection
    /// is connected and the result is what to tell the client. The caller releases the
    /// write queue with the reply (or push) in front.
    pub(crate) async fn connect(
        &mut self,
        request: ConnectRequest,
    ) -> Result<ConnectResult, ConnectFail> {
        let gw = Arc::clone(&self.gw);
        let (user, exp, token_channels, conn_info) = if request.token.is_empty() {
            if !gw.config.allow_anonymous {
                return Err(ConnectFail::Error(ClientError::UNAUTHORIZED));
            }
            (String::new(), None, Vec::new(), None)
        } else {
            match gw.tokens.connection(&request.token) {
                Ok(claims) => (
                    claims.sub,
                    claims.exp,
                    claims.channels,
                    claims.info.map(|i| i.get().to_owned()),
                ),
                Err(TokenError::Expired) => {
                    return Err(ConnectFail::Error(ClientError::TOKEN_EXPIRED));
                }
                Err(e) => {
                    tracing::debug!(client = %self.client.client_id, error = ?e, "connection token refused");
                    return Err(ConnectFail::Disconnect(Disconnect::INVALID_TOKEN));
                }
            }
        };
        // Server-side subscriptions: the token's channels, and a unidirectional client's
        // own `subs` under the subscribe rules.
        let mut wanted: Vec<(String, Option<u64>)> = Vec::new();
        for channel in token_channels {
            gw.check_channel(&channel).map_err(ConnectFail::Error)?;
            wanted.push((channel, None));
        }
        if self.client.uni {
            for (channel, sub) in &request.subs {
                if wanted.iter().any(|(c, _)| c == channel) {
                    continue;
                }
                let sub_exp = self.permit_subscribe(&user, channel, &sub.token)?;
                wanted.push((channel.clone(), sub_exp));
            }
        }
        if wanted.len() > gw.config.limits.max_channels_per_connection {
            return Err(ConnectFail::Error(ClientError::LIMIT_EXCEEDED));
        }
        // Publications of the channels joined below wait behind the connect reply (a new
        // queue starts held; a second connect after a refused one holds it again).
        self.client.queue.hold();
        let mut subs = BTreeMap::new();
        for (channel, sub_exp) in wanted {
            if gw.history_rules(&channel).size > 0 {
                match self.join_server_side_positioned(&channel, &request).await {
                    Ok((generation, mut result)) => {
                        result.expires = sub_exp.is_some();
                        result.ttl = sub_exp.map(ttl_until).unwrap_or(0);
                        let rules = gw.config.rules_for(&channel).unwrap_or_default();
                        self.subs.insert(
                            channel.clone(),
                            SubEntry::new(generation, true, sub_exp, &rules),
                        );
                        subs.insert(channel, result);
                        continue;
                    }
                    Err(e) => {
                        self.leave_all(false).await;
                        return Err(ConnectFail::Error(e));
                    }
                }
            }
            let redis = gw.redis_channel(&channel);
            let rules = gw.config.rules_for(&channel).unwrap_or_default();
            match gw
                .node
                .join(&channel, &redis, &self.client, None, rules.join_leave)
                .await
            {
                Ok(generation) => {
                    self.subs.insert(
                        channel.clone(),
                        SubEntry::new(generation, true, sub_exp, &rules),
                    );
                    subs.insert(channel, subscribe_result(sub_exp));
                }
                Err(e) => {
                    self.leave_all(false).await;
                    return Err(ConnectFail::Error(join_error(e)));
                }
            }
        }
        // Set once connected (a refused attempt may be followed by one with another token);
        // `disconnect_user` and the API match on it.
        let _ = self.client.user.set(user);
        self.connected = true;
        self.exp = exp;
        self.conn_info = conn_info;
        self.presence_refresh_at = Instant::now() + presence_refresh_interval(&gw.config);
        let joined: Vec<(String, bool, bool)> = self
            .subs
            .iter()
            .map(|(c, s)| (c.clone(), s.presence, s.join_leave))
            .collect();
        for (channel, presence, join_leave) in joined {
            self.entered(&channel, presence, join_leave).await;
        }
        self.next_ping = Instant::now() + gw.config.ping_interval;
        Ok(ConnectResult {
            client: self.client.client_id.clone(),
            version: VERSION,
            expires: exp.is_some(),
            ttl: exp.map(ttl_until).unwrap_or(0),
            subs,
            ping: gw.config.ping_interval.as_secs().min(u64::from(u32::MAX)) as u32,
            pong: !self.client.uni,
            node: gw.config.node_name.clone(),
        })
    }

    /// A server-side subscription to a channel with history, made during connect (the
    /// queue is held, so everything queued here follows the connect reply). It recovers
    /// from the position the connect request's `subs` entry gives, or else from the one
    /// the unidirectional transport resumes from ([`Session::resume`]). Recovered
    /// publications are queued as publication pushes, in order, before the held live ones,
    /// so a plain `EventSource` needs no SDK to read them; the result says whether the
    /// recovery was complete.
    async fn join_server_side_positioned(
        &mut self,
        channel: &str,
        request: &ConnectRequest,
    ) -> Result<(u64, SubscribeResult), ClientError> {
        let since = match request.subs.get(channel) {
            Some(sub) if sub.recover => Some(StreamPosition {
                offset: sub.offset,
                epoch: sub.epoch.clone(),
            }),
            _ => self.resume.get(channel).cloned(),
        };
        let (generation, page, recovered) = self.join_positioned(channel, since.as_ref()).await?;
        let mut first = Vec::new();
        if recovered {
            for (offset, bytes) in &page.publications {
                let push = crate::payload::publication_push_at(channel, bytes, Some(*offset));
                first.push(if self.client.uni {
                    Arc::from(push)
                } else {
                    Arc::from(protocol::wrap_push(&push))
                });
            }
        }
        // Where the client stands once the connect reply is out: before the recovered
        // publications, or at the channel's position when it starts from now.
        let start = match &since {
            Some(s) if recovered => s.clone(),
            _ => page.position.clone(),
        };
        self.positions.insert(channel.to_owned(), start);
        self.gw
            .node
            .release_buffer(channel, generation, &self.client, first, &page.position);
        let result = SubscribeResult {
            recoverable: true,
            positioned: true,
            epoch: page.position.epoch.clone(),
            offset: page.position.offset,
            was_recovering: since.is_some(),
            recovered,
            ..Default::default()
        };
        Ok((generation, result))
    }

    /// Whether `user` may subscribe to `channel` with `token` (possibly empty); the
    /// subscription token's expiry when one was used.
    fn permit_subscribe(
        &self,
        user: &str,
        channel: &str,
        token: &str,
    ) -> Result<Option<u64>, ConnectFail> {
        let rules = self.gw.check_channel(channel).map_err(ConnectFail::Error)?;
        if !token.is_empty() {
            return match self.gw.tokens.subscription(token, user, channel) {
                Ok(claims) => Ok(claims.exp),
                Err(TokenError::Expired) => Err(ConnectFail::Error(ClientError::TOKEN_EXPIRED)),
                Err(_) => Err(ConnectFail::Error(ClientError::PERMISSION_DENIED)),
            };
        }
        match rules.subscribe {
            SubscribePolicy::Any => Ok(None),
            SubscribePolicy::Authenticated if !user.is_empty() => Ok(None),
            _ => Err(ConnectFail::Error(ClientError::PERMISSION_DENIED)),
        }
    }

    async fn subscribe(&mut self, id: u32, mut request: SubscribeRequest) {
        let channel = std::mem::take(&mut request.channel);
        if self.subs.contains_key(&channel) {
            return self.fail(id, &ClientError::ALREADY_SUBSCRIBED);
        }
        let exp = match self.permit_subscribe(self.client.user(), &channel, &request.token) {
            Ok(exp) => exp,
            Err(ConnectFail::Error(e)) => return self.fail(id, &e),
            Err(ConnectFail::Disconnect(_)) => unreachable!("permit_subscribe only errs"),
        };
        if self.subs.len() >= self.gw.config.limits.max_channels_per_connection {
            return self.fail(id, &ClientError::LIMIT_EXCEEDED);
        }
        let rules = self.gw.config.rules_for(&channel).unwrap_or_default();
        let history = rules.history_size > 0;
        let recoverable =
            history && (request.recoverable || request.recover || rules.force_recovery);
        let positioned = history && (recoverable || request.positioned || rules.force_positioning);
        if positioned {
            request.channel = channel;
            return self
                .subscribe_positioned(id, request, exp, recoverable)
                .await;
        }
        let reply: Arc<str> = Arc::from(protocol::reply(id, "subscribe", &subscribe_result(exp)));
        let redis = self.gw.redis_channel(&channel);
        let rules = self.gw.config.rules_for(&channel).unwrap_or_default();
        match self
            .gw
            .node
            .join(
                &channel,
                &redis,
                &self.client,
                Some(reply),
                rules.join_leave,
            )
            .await
        {
            Ok(generation) => {
                self.subs.insert(
                    channel.clone(),
                    SubEntry::new(generation, false, exp, &rules),
                );
                self.entered(&channel, rules.presence, rules.join_leave)
                    .await;
            }
            Err(e) => self.fail(id, &join_error(e)),
        }
    }

    /// Joins a channel with history: the membership starts with live publications held,
    /// then the position (and, when `since` is given, the publications after it) is read
    /// from history. The Redis subscription is confirmed before history is read, so a
    /// publication is either in the read or among the held ones (or both, and then sent
    /// once, see [`crate::node`]'s `release_buffer`). Returns the generation, the page and
    /// whether it covers `since`. The caller releases the buffer.
    async fn join_positioned(
        &mut self,
        channel: &str,
        since: Option<&StreamPosition>,
    ) -> Result<(u64, HistoryPage, bool), ClientError> {
        let redis = self.gw.redis_channel(channel);
        let rules = self.gw.history_rules(channel);
        let join_leave = self
            .gw
            .config
            .rules_for(channel)
            .is_some_and(|r| r.join_leave);
        let generation = self
            .gw
            .node
            .join_buffered(channel, &redis, &self.client, true, join_leave)
            .await
            .map_err(join_error)?;
        let query = HistoryQuery {
            limit: if since.is_some() { usize::MAX } else { 0 },
            since: since.cloned(),
            reverse: false,
            size: rules.size,
            ttl: rules.ttl,
        };
        match self.gw.history.history(&redis, query).await {
            Ok(page) => {
                let recovered = since.is_some_and(|s| page.covers(s));
                Ok((generation, page, recovered))
            }
            Err(e) => {
                self.gw
                    .node
                    .leave(channel, generation, self.client.id)
                    .await;
                Err(feature_error(e))
            }
        }
    }

    /// A client subscription to a channel with history: the reply carries the channel's
    /// position and, when recovering, the missed publications; held live publications
    /// follow it.
    async fn subscribe_positioned(
        &mut self,
        id: u32,
        request: SubscribeRequest,
        exp: Option<u64>,
        recoverable: bool,
    ) {
        let channel = request.channel;
        let recovering = recoverable && request.recover;
        let since = StreamPosition {
            offset: request.offset,
            epoch: request.epoch,
        };
        let (generation, page, recovered) = match self
            .join_positioned(&channel, recovering.then_some(&since))
            .await
        {
            Ok(joined) => joined,
            Err(e) => return self.fail(id, &e),
        };
        let mut result = subscribe_result(exp);
        result.recoverable = recoverable;
        result.positioned = true;
        result.epoch = page.position.epoch.clone();
        result.offset = page.position.offset;
        if recovering {
            result.was_recovering = true;
            result.recovered = recovered;
            if recovered {
                result.publications = page
                    .publications
                    .iter()
                    .filter_map(|(offset, bytes)| {
                        RawValue::from_string(publication_json(bytes, Some(*offset))).ok()
                    })
                    .collect();
            }
        }
        let reply: Arc<str> = Arc::from(protocol::reply(id, "subscribe", &result));
        self.gw.node.release_buffer(
            &channel,
            generation,
            &self.client,
            vec![reply],
            &page.position,
        );
        let rules = self.gw.config.rules_for(&channel).unwrap_or_default();
        self.subs.insert(
            channel.clone(),
            SubEntry::new(generation, false, exp, &rules),
        );
        self.entered(&channel, rules.presence, rules.join_leave)
            .await;
    }

    async fn unsubscribe(&mut self, id: u32, request: ChannelRequest) {
        if let Some(sub) = self.subs.remove(&request.channel) {
            self.gw
                .node
                .leave(&request.channel, sub.generation, self.client.id)
                .await;
            self.left(&request.channel, &sub).await;
        }
        self.answer(id, protocol::reply(id, "unsubscribe", &Empty {}));
    }

    async fn publish(&mut self, id: u32, request: PublishRequest) {
        let rules = match self.gw.check_channel(&request.channel) {
            Ok(r) => r,
            Err(e) => return self.fail(id, &e),
        };
        let allowed = match rules.publish {
            PublishPolicy::Any => true,
            PublishPolicy::Subscribers => self.subs.contains_key(&request.channel),
            _ => false,
        };
        if !allowed {
            return self.fail(id, &ClientError::PERMISSION_DENIED);
        }
        let Some(data) = request.data else {
            return self.fail(id, &ClientError::BAD_REQUEST.with_message("no data"));
        };
        let bytes = data.get().as_bytes();
        if bytes.len() > self.gw.config.limits.max_message_bytes {
            return self.fail(id, &ClientError::LIMIT_EXCEEDED);
        }
        match self.gw.publish_raw(&request.channel, bytes).await {
            Ok(_) => self.answer(id, protocol::reply(id, "publish", &Empty {})),
            Err(e) => {
                tracing::debug!(error = %e, "client publish failed");
                self.fail(id, &ClientError::INTERNAL)
            }
        }
    }

    /// `presence` and `presence_stats`: for subscribers of a channel with presence (a
    /// channel without it is "not available", a client not subscribed "permission
    /// denied").
    async fn presence(&mut self, id: u32, request: ChannelRequest, stats: bool) {
        let rules = match self.gw.check_channel(&request.channel) {
            Ok(r) => r,
            Err(e) => return self.fail(id, &e),
        };
        if !rules.presence {
            return self.fail(id, &ClientError::NOT_AVAILABLE);
        }
        if !self.subs.contains_key(&request.channel) {
            return self.fail(id, &ClientError::PERMISSION_DENIED);
        }
        let (method, result) = if stats {
            (
                "presence_stats",
                self.gw.presence_stats(&request.channel).await,
            )
        } else {
            ("presence", self.gw.presence_of(&request.channel).await)
        };
        match result {
            Ok(value) => self.answer(id, protocol::reply(id, method, &value)),
            Err(e) => self.fail(id, &feature_error(e)),
        }
    }

    /// Whether the presence store is worth a call (no failure in the last
    /// [`PRESENCE_BACKOFF`]).
    fn presence_reachable(&self) -> bool {
        self.presence_failed_at
            .is_none_or(|at| at.elapsed() >= PRESENCE_BACKOFF)
    }

    /// This connection as a presence entry.
    fn presence_entry(&self) -> PresenceEntry {
        PresenceEntry::new(self.client.client_id.clone(), self.client.user())
            .with_conn_info(self.conn_info.clone())
    }

    /// A subscription started: enter the channel's presence and announce the join.
    /// A failed presence add is logged and made good by the next refresh.
    async fn entered(&mut self, channel: &str, presence: bool, join_leave: bool) {
        if !(presence || join_leave) {
            return;
        }
        let redis = self.gw.redis_channel(channel);
        let entry = self.presence_entry();
        if presence
            && self.presence_reachable()
            && let Err(e) = self
                .gw
                .presence_add(&redis, &entry, join_leave, false)
                .await
        {
            self.presence_failed_at = Some(Instant::now());
            tracing::warn!(%channel, error = ?e, "presence add failed; retried at the next refresh");
        }
        if join_leave {
            self.gw
                .announce(&redis, &join_leave_event(true, &entry))
                .await;
        }
    }

    /// A subscription ended: leave the channel's presence and announce the leave. A failed
    /// removal is logged; the entry then expires by itself within `presence_ttl`.
    async fn left(&mut self, channel: &str, sub: &SubEntry) {
        if !(sub.presence || sub.join_leave) {
            return;
        }
        let redis = self.gw.redis_channel(channel);
        let entry = self.presence_entry();
        if sub.presence
            && self.presence_reachable()
            && let Err(e) = self.gw.presence.remove(&redis, &entry.client).await
        {
            self.presence_failed_at = Some(Instant::now());
            tracing::warn!(%channel, error = ?e, "presence removal failed; the entry expires by itself");
        }
        if sub.join_leave {
            self.gw
                .announce(&redis, &join_leave_event(false, &entry))
                .await;
        }
    }

    async fn history(&mut self, id: u32, request: HistoryRequest) {
        if let Err(e) = self.gw.check_channel(&request.channel) {
            return self.fail(id, &e);
        }
        if !self.subs.contains_key(&request.channel) {
            return self.fail(id, &ClientError::PERMISSION_DENIED);
        }
        let redis = self.gw.redis_channel(&request.channel);
        let rules = self.gw.history_rules(&request.channel);
        let query = HistoryQuery {
            // The protocol's limit: 0 only the position, -1 everything kept.
            limit: if request.limit < 0 {
                usize::MAX
            } else {
                request.limit as usize
            },
            since: request.since,
            reverse: request.reverse,
            size: rules.size,
            ttl: rules.ttl,
        };
        match self.gw.history.history(&redis, query).await {
            Ok(page) => {
                let publications: Vec<serde_json::Value> = page
                    .publications
                    .iter()
                    .map(|(offset, bytes)| {
                        let push = crate::payload::publication_push(&request.channel, bytes);
                        let mut value: serde_json::Value =
                            serde_json::from_str(&push).unwrap_or_default();
                        let mut publication = value["pub"].take();
                        publication["offset"] = serde_json::json!(offset);
                        publication
                    })
                    .collect();
                let result = serde_json::json!({
                    "publications": publications,
                    "epoch": page.position.epoch,
                    "offset": page.position.offset,
                });
                self.answer(id, protocol::reply(id, "history", &result));
            }
            Err(e) => self.fail(id, &feature_error(e)),
        }
    }

    fn refresh(&mut self, id: u32, request: RefreshRequest) -> Result<(), Disconnect> {
        if request.token.is_empty() {
            self.fail(id, &ClientError::BAD_REQUEST.with_message("no token"));
            return Ok(());
        }
        match self.gw.tokens.connection(&request.token) {
            Ok(claims) if claims.sub == self.client.user() => {
                self.exp = claims.exp;
                let result = RefreshResult {
                    client: self.client.client_id.clone(),
                    version: VERSION,
                    expires: claims.exp.is_some(),
                    ttl: claims.exp.map(ttl_until).unwrap_or(0),
                };
                self.answer(id, protocol::reply(id, "refresh", &result));
                Ok(())
            }
            Ok(_) => Err(Disconnect::INVALID_TOKEN),
            Err(TokenError::Expired) => {
                self.fail(id, &ClientError::TOKEN_EXPIRED);
                Ok(())
            }
            Err(_) => Err(Disconnect::INVALID_TOKEN),
        }
    }

    fn sub_refresh(&mut self, id: u32, request: SubRefreshRequest) {
        if !self.subs.contains_key(&request.channel) {
            return self.fail(id, &ClientError::PERMISSION_DENIED);
        }
        let user = self.client.user().to_owned();
        match self
            .gw
            .tokens
            .subscription(&request.token, &user, &request.channel)
        {
            Ok(claims) => {
                if let Some(sub) = self.subs.get_mut(&request.channel) {
                    sub.exp = claims.exp;
                }
                let result = SubRefreshResult {
                    expires: claims.exp.is_some(),
                    ttl: claims.exp.map(ttl_until).unwrap_or(0),
                };
                self.answer(id, protocol::reply(id, "sub_refresh", &result));
            }
            Err(TokenError::Expired) => self.fail(id, &ClientError::TOKEN_EXPIRED),
            Err(_) => self.fail(id, &ClientError::PERMISSION_DENIED),
        }
    }

    /// Leaves every channel; `announce` also leaves presence and announces the leaves
    /// (false for a connect that failed half-way, which never entered them).
    async fn leave_all(&mut self, announce: bool) {
        for (channel, sub) in std::mem::take(&mut self.subs) {
            self.gw
                .node
                .leave(&channel, sub.generation, self.client.id)
                .await;
            if announce {
                self.left(&channel, &sub).await;
            }
        }
    }

    /// Ends the connection: leaves every channel, closes the write queue with `reason`
    /// (if nothing closed it before) and unregisters. Idempotent.
    pub(crate) async fn finish(&mut self, reason: Disconnect) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.client.queue.close(reason);
        self.leave_all(true).await;
        self.gw.node.remove_client(self.client.id);
        GatewayMetrics::dec(&self.gw.metrics.connections);
        self.gw.connection_ended.notify_waiters();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A task ended without `finish` (a panic, or the runtime going away): at least
        // unregister, so the connection count stays true. Channel memberships end when the
        // closed queue drops pushes and the fan-out is closed with the hub.
        if !self.finished {
            self.client.queue.close(Disconnect::CONNECTION_CLOSED);
            self.gw.node.remove_client(self.client.id);
            GatewayMetrics::dec(&self.gw.metrics.connections);
            self.gw.connection_ended.notify_waiters();
        }
    }
}

/// How long after a failed presence call a connection leaves the store alone.
const PRESENCE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a connection refreshes its presence entries: a third of their expiry.
fn presence_refresh_interval(config: &crate::GatewayConfig) -> std::time::Duration {
    config.presence_ttl / 3
}

fn subscribe_result(exp: Option<u64>) -> SubscribeResult {
    SubscribeResult {
        expires: exp.is_some(),
        ttl: exp.map(ttl_until).unwrap_or(0),
        ..Default::default()
    }
}

fn join_error(e: JoinError) -> ClientError {
    match e {
        JoinError::Unavailable(reason) => {
            tracing::debug!(%reason, "subscribe failed: Redis unavailable");
            ClientError::INTERNAL
        }
        JoinError::Hub(e) if e.is_limit_exceeded() => ClientError::LIMIT_EXCEEDED,
        JoinError::Hub(e) => {
            tracing::warn!(error = %e, "subscribe failed");
            ClientError::INTERNAL
        }
    }
}

fn feature_error(e: FeatureError) -> ClientError {
    match e {
        FeatureError::NotAvailable => ClientError::NOT_AVAILABLE,
        FeatureError::Unavailable(_) => ClientError::INTERNAL,
    }
}

/// The monotonic instant of Unix time `exp` (seconds).
fn instant_of(exp: u64) -> Instant {
    let now = now_secs();
    if exp <= now {
        Instant::now()
    } else {
        Instant::now() + std::time::Duration::from_secs(exp - now)
    }
}
