//! One MCP session: lists this session's tools, runs tool calls through the
//! pipeline, and turns every operation error into a tool error the agent reads.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeRequestParams, InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use crate::app::AppState;
use crate::catalog::{OperationSpec, catalog};
use crate::config::{DEFAULT_NAMESPACE, NamespaceMode, namespace_from_folder, validate_namespace};
use crate::error::OpError;
use crate::ops::registry;
use crate::session::{Session, ToolSelection};

/// HTTP request header that chooses the session's namespace at `initialize`.
pub const NAMESPACE_HEADER: &str = "x-engram-namespace";
/// Longest tool error message sent.
const MAX_ERROR_CHARS: usize = 2_000;
/// How long to wait for the client's roots when `--namespace auto`.
const ROOTS_TIMEOUT: Duration = Duration::from_secs(3);

const INSTRUCTIONS: &str = "engram is your long-term memory. Store what you learn with \
episodic_remember and find it again with episodic_recall (natural-language search). \
More tools exist than are listed: discover_tools finds them, enable_toolset lists a \
layer's tools, call_operation runs any operation by name.";

/// Every operation as an MCP `Tool`, built once per process: schemas are
/// generated here, never per `tools/list`.
pub struct ToolTable {
    tools: Vec<(&'static OperationSpec, Tool)>,
}

impl ToolTable {
    pub fn get() -> &'static ToolTable {
        static TABLE: OnceLock<ToolTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            let tools = catalog()
                .operations
                .iter()
                .filter_map(|spec| {
                    let entry = registry().get(&spec.name)?;
                    Some((
                        spec,
                        build_tool(spec, (entry.input_schema)(), (entry.output_schema)()),
                    ))
                })
                .collect();
            ToolTable { tools }
        })
    }

    fn find(&self, name: &str) -> Option<&(&'static OperationSpec, Tool)> {
        self.tools.iter().find(|(s, _)| s.name == name)
    }
}

fn as_object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

fn build_tool(spec: &OperationSpec, input: Value, output: Value) -> Tool {
    let a = &spec.annotations;
    Tool::new(
        spec.name.clone(),
        spec.description.trim().replace('\n', " "),
        as_object(input),
    )
    .with_raw_output_schema(as_object(output))
    .with_annotations(
        ToolAnnotations::new()
            .read_only(a.read_only)
            .destructive(a.destructive)
            .idempotent(a.idempotent)
            .open_world(a.open_world),
    )
}

/// The MCP handler for one session. Over stdio there is one per process; over
/// HTTP the service factory makes one per `initialize`.
#[derive(Clone)]
pub struct EngramHandler {
    app: AppState,
    session: Arc<Session>,
    namespace: NamespaceMode,
}

impl EngramHandler {
    /// A session with this process's `--namespace` and `--tools`.
    pub fn new(app: AppState) -> Self {
        let session = app.new_session();
        let namespace = app.config().namespace.clone();
        EngramHandler {
            app,
            session,
            namespace,
        }
    }

    /// A session with its own namespace mode and tool selection: for sessions
    /// forwarded from another engram process, which keep that process's flags.
    pub fn with_options(app: AppState, namespace: NamespaceMode, tools: ToolSelection) -> Self {
        let session = app.new_session_with_tools(tools);
        EngramHandler {
            app,
            session,
            namespace,
        }
    }

    /// Fixes the namespace before the first call: `--namespace NAME`, or with
    /// `auto` the name of the client's first root folder, else `default`.
    async fn ensure_namespace(&self, ctx: &RequestContext<RoleServer>) {
        if self.session.namespace_is_set() {
            return;
        }
        let ns = match &self.namespace {
            NamespaceMode::Fixed(ns) => ns.clone(),
            NamespaceMode::Auto => self
                .namespace_from_roots(ctx)
                .await
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        };
        self.session.set_namespace(ns);
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

    fn tool_error(message: String) -> CallToolResponse {
        // Messages quote little of what was sent; this bounds any that slipped.
        let message = crate::ops::schema::truncate_chars(&message, MAX_ERROR_CHARS);
        CallToolResult::error(vec![ContentBlock::text(message)]).into()
    }
}

impl ServerHandler for EngramHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("engram", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    /// Protocol 2026-07-28 has no sessions; cap below it so every client gets one.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        if let Some(parts) = context.extensions.get::<http::request::Parts>()
            && let Some(value) = parts.headers.get(NAMESPACE_HEADER)
        {
            let ns = value.to_str().unwrap_or_default().trim().to_string();
            validate_namespace(&ns).map_err(|m| McpError::invalid_params(m, None))?;
            self.session.set_namespace(ns);
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let sel = self.session.tools();
        let tools = ToolTable::get()
            .tools
            .iter()
            .filter(|(spec, _)| sel.includes(spec))
            .map(|(_, tool)| tool.clone())
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        ToolTable::get().find(name).map(|(_, t)| t.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.ensure_namespace(&context).await;
        let name = request.name.as_ref();
        let Some((spec, _)) = ToolTable::get().find(name) else {
            let err = crate::pipeline::execute(&self.app, &self.session, name, Value::Null)
                .await
                .err()
                .unwrap_or_else(|| OpError::UnknownOperation(format!("no tool {name:?}")));
            return Ok(Self::tool_error(err.to_string()));
        };
        let before = self.session.tools();
        if !before.includes(spec) {
            return Ok(Self::tool_error(
                OpError::NotEnabled(format!(
                    "tool {name:?} is not listed in this session: call enable_toolset with \
                     {{\"layer\": \"{}\"}} first, or run it through call_operation",
                    spec.layer
                ))
                .to_string(),
            ));
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        // Operations catch their own panics; this catches one anywhere else on
        // the path (cache, limiter), so no call goes unanswered.
        let call = std::panic::AssertUnwindSafe(self.app.call(&self.session, name, args));
        let result = futures::FutureExt::catch_unwind(call)
            .await
            .unwrap_or_else(|panic| Err(OpError::from_panic(name, panic)));
        if self.session.tools() != before {
            // The session's list grew (enable_toolset): tell the client to re-list.
            if let Err(e) = context.peer.notify_tool_list_changed().await {
                tracing::debug!(error = %e, "could not send tools/list_changed");
            }
        }
        Ok(match result {
            Ok(value) => CallToolResult::structured(value).into(),
            Err(e) => Self::tool_error(e.to_string()),
        })
    }
}
