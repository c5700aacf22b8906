//! One MCP session: lists this session's tools, runs tool calls through the
//! pipeline, and turns every operation error into a tool error the agent reads.
//!
//! Both protocol generations: 2025-11-25 and earlier (`initialize`, one session
//! per connection, `enable_toolset` + `tools/list_changed`, `logging/setLevel`)
//! and 2026-07-28 (no handshake, `server/discover`, every request stands alone).
//! Under 2026-07-28 over HTTP each request gets a fresh handler and session:
//! its namespace comes from the request's header, `tools/list` is the profile
//! (the same for every caller), operations outside it run through
//! `call_operation`, and session state travels as a `session_open` handle.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    DiscoverResult, Implementation, InitializeRequestParams, InitializeResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
// Logging (deprecated by SEP-2577) is still part of 2025-11-25, which engram serves.
#[allow(deprecated)]
use rmcp::model::SetLevelRequestParams;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use super::resources;
use super::tools::ToolTable;
use crate::auth::{Grant, Scope};
use crate::config::{DEFAULT_NAMESPACE, NamespaceMode, namespace_from_folder, validate_namespace};
use crate::error::OpError;
use crate::pipeline::{Engine, Reply};
use crate::session::{Session, ToolSelection};

/// HTTP request header that chooses the session's namespace at `initialize`.
pub const NAMESPACE_HEADER: &str = "x-engram-namespace";
/// Longest tool error message sent.
const MAX_ERROR_CHARS: usize = 2_000;
/// How long to wait for the client's roots when `--namespace auto`.
const ROOTS_TIMEOUT: Duration = Duration::from_secs(3);

const INSTRUCTIONS: &str = "engram is your long-term memory. Store what you learn with \
episodic_remember and find it again with episodic_recall (natural-language search). \
More tools exist than are listed: discover_tools finds them, call_operation runs any \
operation by name (enable_toolset lists a layer's tools where the client re-lists). \
Without a connection-level session (MCP 2026-07-28), session_open gives a handle for \
the session_* tools.";
/// How long a client may cache `tools/list` (it changes only with the flags).
const TOOLS_TTL_MS: u64 = 5 * 60 * 1000;

/// The MCP handler for one session. Over stdio there is one per process; over
/// HTTP the service factory makes one per `initialize`.
#[derive(Clone)]
pub struct EngramHandler {
    app: Engine,
    session: Arc<Session>,
    namespace: NamespaceMode,
    /// Resource URIs this session subscribed to, and whether the watcher that
    /// sends their updates runs.
    subscriptions: Arc<Mutex<Subscriptions>>,
}

#[derive(Default)]
struct Subscriptions {
    uris: BTreeSet<String>,
    watching: bool,
}

impl EngramHandler {
    /// A session with this process's `--namespace` and `--tools`.
    pub fn new(app: Engine) -> Self {
        let session = app.new_session();
        let namespace = app.app().config().namespace.clone();
        EngramHandler {
            app,
            session,
            namespace,
            subscriptions: Arc::default(),
        }
    }

    /// A session with its own namespace mode and tool selection: for sessions
    /// forwarded from another engram process, which keep that process's flags.
    pub fn with_options(app: Engine, namespace: NamespaceMode, tools: ToolSelection) -> Self {
        let session = app.new_session_with_tools(tools);
        EngramHandler {
            app,
            session,
            namespace,
            subscriptions: Arc::default(),
        }
    }

    /// Fixes the namespace before the first call: the HTTP request's namespace
    /// header (stateless requests carry it on every call), else `--namespace
    /// NAME`, else with `auto` the name of the client's first root folder, else
    /// `default`.
    async fn ensure_namespace(&self, ctx: &RequestContext<RoleServer>) -> Result<(), String> {
        if self.authorize(ctx)? || self.session.namespace_is_set() {
            return Ok(());
        }
        if let Some(ns) = header_namespace(ctx)? {
            self.session.set_namespace(ns);
            return Ok(());
        }
        let ns = match &self.namespace {
            NamespaceMode::Fixed(ns) => ns.clone(),
            NamespaceMode::Auto => self
                .namespace_from_roots(ctx)
                .await
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        };
        self.session.set_namespace(ns);
        Ok(())
    }

    /// Binds the session to the request's token, if it came with one (HTTP
    /// with tokens), and fixes its namespace: the token's, or for an admin
    /// token the one its header names. True when a token decided it.
    fn authorize(&self, ctx: &RequestContext<RoleServer>) -> Result<bool, String> {
        let Some(grant) = http_parts(ctx).and_then(|p| p.extensions.get::<Grant>()) else {
            return Ok(false);
        };
        self.session.bind_grant(grant.clone())?;
        let namespace = match (grant.scope, header_namespace(ctx)?) {
            (Scope::Admin, Some(asked)) => asked,
            _ => grant.namespace.clone(),
        };
        if self.session.namespace_is_set() && self.session.namespace() != namespace {
            return Err(format!(
                "this session works in namespace {:?} and the token is for {namespace:?}: \
                 open a new session with the token",
                self.session.namespace()
            ));
        }
        self.session.set_namespace(namespace);
        Ok(true)
    }

    #[allow(deprecated)] // roots: still what every current host sends
    async fn namespace_from_roots(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        let supports_roots = ctx
            .peer
            .peer_info()
            .is_some_and(|info| info.capabilities.roots.is_some());
        if !supports_roots {
            return None;
        }
        let roots = tokio::time::timeout(ROOTS_TIMEOUT, ctx.peer.list_roots())
            .await
            .ok()?
            .ok()?;
        let root = roots.roots.into_iter().next()?;
        let folder = root.name.filter(|n| !n.is_empty()).or_else(|| {
            root.uri
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .map(str::to_string)
        })?;
        namespace_from_folder(&folder)
    }

    /// Checks that this session may call the tool `request` names: a known
    /// tool, not an `enable_toolset` that would grow a 2026-07-28 list, and
    /// listed in the session. Answers the session's list as checked, or the
    /// message of the tool error.
    fn check_callable(
        &self,
        request: &CallToolRequestParams,
        current: bool,
    ) -> Result<ToolSelection, String> {
        let name = request.name.as_ref();
        let Some((spec, _)) = ToolTable::get().find(name) else {
            return Err(crate::pipeline::unknown_operation(name).to_string());
        };
        // Under 2026-07-28 tools/list is the profile for every caller, so a
        // session's list cannot grow: say how to reach the layer instead.
        if current && spec.name == ENABLE_TOOLSET && would_grow(&self.session, request) {
            return Err(OpError::NotEnabled(
                "under MCP 2026-07-28 tool lists are the same for every request: run this \
                 layer's operations through call_operation {name, arguments}; \
                 discover_tools lists them"
                    .to_string(),
            )
            .to_string());
        }
        let listed = self.session.tools();
        if !listed.includes(spec) {
            let layer = format!("{{\"layer\": \"{}\"}}", spec.layer);
            return Err(OpError::NotEnabled(format!(
                "tool {name:?} is not listed in this session: call enable_toolset with \
                 {layer} first, or run it through call_operation"
            ))
            .to_string());
        }
        Ok(listed)
    }

    /// Runs the operation through the pipeline. Operations catch their own
    /// panics; this catches one anywhere else on the path (cache, limiter), so
    /// no call goes unanswered.
    async fn run_guarded(&self, name: &str, args: Value) -> Result<Reply, OpError> {
        let call = std::panic::AssertUnwindSafe(self.app.reply(&self.session, name, args));
        futures::FutureExt::catch_unwind(call)
            .await
            .unwrap_or_else(|panic| Err(OpError::from_panic(name, panic)))
    }

    /// Tells the client to re-list its tools when the call grew the session's
    /// list (`enable_toolset`) past `before`.
    async fn announce_list_change(
        &self,
        before: &ToolSelection,
        context: &RequestContext<RoleServer>,
    ) {
        if self.session.tools() == *before {
            return;
        }
        if let Err(e) = context.peer.notify_tool_list_changed().await {
            tracing::debug!(error = %e, "could not send tools/list_changed");
        }
    }

    fn tool_error(message: String) -> CallToolResponse {
        // Messages quote little of what was sent; this bounds any that slipped.
        let message = crate::ops::schema::truncate_chars(&message, MAX_ERROR_CHARS);
        CallToolResult::error(vec![ContentBlock::text(message)]).into()
    }
}

impl ServerHandler for EngramHandler {
    #[allow(deprecated)] // logging: see set_level
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_logging()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("engram", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    /// For 2026-07-28 clients: what works under that protocol. Its change
    /// notifications travel over `subscriptions/listen`, which engram does not
    /// serve yet, and its log level is per request: so no `listChanged`,
    /// resource `subscribe` or `logging` here (2025-11-25 sessions keep them).
    #[allow(deprecated)] // the logging capability: see set_level
    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, McpError> {
        let mut info = self.get_info();
        let caps = &mut info.capabilities;
        if let Some(tools) = caps.tools.as_mut() {
            tools.list_changed = None;
        }
        if let Some(resources) = caps.resources.as_mut() {
            resources.subscribe = None;
            resources.list_changed = None;
        }
        caps.logging = None;
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            info,
        ))
    }

    /// Every protocol version rmcp knows, 2026-07-28 included.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
    }

    /// Accepted for 2025-11-25 clients; engram's logs go to stderr, not to clients.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tracing::debug!(level = ?request.level, "client asked for a log level");
        Ok(())
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        let by_token = self
            .authorize(&context)
            .map_err(|m| McpError::invalid_params(m, None))?;
        if !by_token
            && let Some(ns) =
                header_namespace(&context).map_err(|m| McpError::invalid_params(m, None))?
        {
            self.session.set_namespace(ns);
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        // Under 2026-07-28 the list is the same for every caller: the profile.
        let sel = if is_current_protocol(&context) {
            self.app.app().default_tools().clone()
        } else {
            self.session.tools()
        };
        let tools = ToolTable::get()
            .tools
            .iter()
            .filter(|(spec, _)| sel.includes(spec))
            .map(|(_, tool)| tool.clone())
            .collect();
        Ok(ListToolsResult::with_all_items(tools)
            .with_ttl_ms(TOOLS_TTL_MS)
            .with_cache_scope(CacheScope::Public))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(resources::listed()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let Some(spec) = resources::find(&request.uri) else {
            let uri = crate::ops::schema::truncate_chars(&request.uri, 200);
            return Err(McpError::resource_not_found(
                format!("no resource {uri:?}: resources/list names them"),
                Some(serde_json::json!({ "uri": uri })),
            ));
        };
        if is_current_protocol(&context) && http_parts(&context).is_some() {
            self.session.mark_stateless();
        }
        self.ensure_namespace(&context)
            .await
            .map_err(|m| McpError::invalid_params(m, None))?;
        let answer = self
            .app
            .call(&self.session, spec.operation, (spec.arguments)())
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(ReadResourceResult::new(vec![resources::contents(spec, &answer)]).into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if resources::find(&request.uri).is_none() {
            return Err(McpError::resource_not_found(
                "no such resource: resources/list names them",
                None,
            ));
        }
        self.ensure_namespace(&context)
            .await
            .map_err(|m| McpError::invalid_params(m, None))?;
        let start_watching = {
            let mut subs = self.subscriptions.lock().expect("subscriptions poisoned");
            subs.uris.insert(request.uri);
            !std::mem::replace(&mut subs.watching, true)
        };
        if start_watching {
            tokio::spawn(watch_writes(
                self.app.app().watch_writes(),
                self.session.namespace().to_string(),
                self.subscriptions.clone(),
                context.peer.clone(),
            ));
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions
            .lock()
            .expect("subscriptions poisoned")
            .uris
            .remove(&request.uri);
        Ok(())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        ToolTable::get().find(name).map(|(_, t)| t.clone())
    }

    /// One tool call: checks, the call, its answer; every failure is a tool
    /// error the agent reads.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let current = is_current_protocol(&context);
        if current && http_parts(&context).is_some() {
            self.session.mark_stateless();
        }
        if let Err(message) = self.ensure_namespace(&context).await {
            return Ok(Self::tool_error(message));
        }
        let before = match self.check_callable(&request, current) {
            Ok(listed) => listed,
            Err(message) => return Ok(Self::tool_error(message)),
        };
        let args = Value::Object(request.arguments.unwrap_or_default());
        let result = self.run_guarded(&request.name, args).await;
        self.announce_list_change(&before, &context).await;
        Ok(match result {
            Ok(reply) => structured(reply).into(),
            Err(e) => Self::tool_error(e.to_string()),
        })
    }
}

const ENABLE_TOOLSET: &str = "enable_toolset";

/// A tool's answer: structured, and as JSON text for clients that read only
/// text (the text the pipeline rendered already, when it has it).
fn structured(reply: Reply) -> CallToolResult {
    let Some(text) = reply.text else {
        return CallToolResult::structured(reply.value);
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text.as_ref())]);
    result.structured_content = Some(reply.value);
    result
}

/// The request speaks MCP 2026-07-28 or later (no sessions, per-request metadata).
fn is_current_protocol(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

fn http_parts(ctx: &RequestContext<RoleServer>) -> Option<&http::request::Parts> {
    ctx.extensions.get::<http::request::Parts>()
}

/// The namespace an HTTP request names in its header, checked.
fn header_namespace(ctx: &RequestContext<RoleServer>) -> Result<Option<String>, String> {
    let Some(value) = http_parts(ctx).and_then(|p| p.headers.get(NAMESPACE_HEADER)) else {
        return Ok(None);
    };
    let ns = value.to_str().unwrap_or_default().trim().to_string();
    validate_namespace(&ns)?;
    Ok(Some(ns))
}

/// Sends `notifications/resources/updated` for this session's subscribed
/// resources when a write in its namespace changes them, until the session ends.
async fn watch_writes(
    mut writes: tokio::sync::broadcast::Receiver<crate::app::Written>,
    namespace: String,
    subscriptions: Arc<Mutex<Subscriptions>>,
    peer: rmcp::Peer<RoleServer>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let received = tokio::select! {
            received = writes.recv() => received,
            // The session ended without a write to notify about.
            _ = peer_closed(&peer) => return,
        };
        let layer = match received {
            Ok(w) if w.namespace == namespace => w.layer,
            Ok(_) => continue,
            // Fell behind: say every subscribed resource changed.
            Err(RecvError::Lagged(_)) => String::new(),
            Err(RecvError::Closed) => return,
        };
        let uris: Vec<String> = {
            let mut subs = subscriptions.lock().expect("subscriptions poisoned");
            if subs.uris.is_empty() {
                // Nothing subscribed any more: stop; a new subscribe starts another.
                subs.watching = false;
                return;
            }
            subs.uris
                .iter()
                .filter(|u| layer.is_empty() || resources::changed_by(&layer).any(|c| c == *u))
                .cloned()
                .collect()
        };
        for uri in uris {
            let update = rmcp::model::ResourceUpdatedNotificationParam::new(uri);
            if peer.notify_resource_updated(update).await.is_err() {
                return; // the session is gone
            }
        }
    }
}

/// An `enable_toolset` call that would add tools to the session's list (a known
/// layer not wholly listed yet).
fn would_grow(session: &Session, request: &CallToolRequestParams) -> bool {
    let Some(layer) = request
        .arguments
        .as_ref()
        .and_then(|a| a.get("layer"))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let listed = session.tools();
    crate::catalog::catalog()
        .operations
        .iter()
        .any(|op| op.layer == layer && !listed.includes(op))
}

/// Resolves once the peer's transport is closed (checked every few seconds).
async fn peer_closed(peer: &rmcp::Peer<RoleServer>) {
    while !peer.is_transport_closed() {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}
