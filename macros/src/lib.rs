//! The `#[coring::main]` and `#[coring::test]` attributes, re-exported by `coring` (its
//! `macros` feature, on by default). Use them through `coring`, not this crate.
//!
//! Written with `proc_macro` alone (no `syn`/`quote`): the attributes only need to find
//! the `async` keyword, the parameter list and the body of a function, so the crate
//! compiles in a moment and adds nothing to a user's dependency tree.

use proc_macro::{Delimiter, Group, Ident, Literal, Spacing, Span, TokenStream, TokenTree};

/// Runs an `async fn main` on a coring runtime.
///
/// ```ignore
/// #[coring::main]
/// async fn main() -> std::io::Result<()> {
///     let data = coring::fs::File::open("/etc/hostname").await?;
///     Ok(())
/// }
/// ```
///
/// Options (all optional, comma-separated): `backend = "io_uring" | "fallback" | "iocp" |
/// "auto"` (default `auto`; the `CORING_BACKEND` variable still wins, as for
/// `Builder::new()`), `entries = N` (submission-queue entries), `pool = N`: a `Pool` of N
/// pinned cores, the function running on core 0 (it may take the pool's
/// `coring::PoolHandle` as its one parameter, to reach the other cores); the pool shuts
/// down when it returns, and a panic in it is resumed on the main thread.
///
/// ```ignore
/// #[coring::main(pool = 2)]
/// async fn main(pool: coring::PoolHandle) {
///     let other = pool.submit_to(1, || async { coring::current_core() }).await;
///     assert_eq!(other.unwrap(), Some(1));
/// }
/// ```
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Main, attr, item).unwrap_or_else(|e| e.into_tokens())
}

/// Runs an `async fn` test once per backend available on the machine (io_uring and the
/// fallback on Linux, the fallback on macOS and FreeBSD, IOCP on Windows), each on a new
/// runtime; a failure names the backend.
///
/// ```ignore
/// #[coring::test]
/// async fn reads_back() {
///     // ...
/// }
/// ```
///
/// Options: `backend = "io_uring" | "fallback" | "iocp"` (only that one; the test fails if
/// it cannot start there), `entries = N`, `timeout = SECS` (fail the test, naming it, if
/// one backend's run takes longer: a hung test fails instead of stalling the suite).
/// `CORING_BACKEND` set to one backend restricts every such test to it. The function may
/// return `()` or a `Result<(), E: Debug>`.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Test, attr, item).unwrap_or_else(|e| e.into_tokens())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Main,
    Test,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Main => "#[coring::main]",
            Kind::Test => "#[coring::test]",
        }
    }
}

/// A compile error at a span.
struct Error {
    span: Span,
    message: String,
}

impl Error {
    fn new(span: Span, message: impl Into<String>) -> Error {
        Error {
            span,
            message: message.into(),
        }
    }

    /// `compile_error!("message")`, pointing at the span.
    fn into_tokens(self) -> TokenStream {
        let mut msg = Literal::string(&self.message);
        msg.set_span(self.span);
        let tokens: Vec<TokenTree> = vec![
            Ident::new("compile_error", self.span).into(),
            punct('!', self.span),
            Group::new(Delimiter::Parenthesis, TokenTree::from(msg).into()).into(),
            punct(';', self.span),
        ];
        tokens.into_iter().collect()
    }
}

fn punct(c: char, span: Span) -> TokenTree {
    let mut p = proc_macro::Punct::new(c, Spacing::Alone);
    p.set_span(span);
    p.into()
}

/// The attribute's options.
#[derive(Default)]
struct Options {
    backend: Option<String>,
    entries: Option<u32>,
    pool: Option<usize>,
    timeout: Option<u64>,
}

/// The backend names `BackendKind::parse` accepts, with the variant each one means.
const BACKENDS: &[(&str, &str)] = &[
    ("auto", "Auto"),
    ("io_uring", "IoUring"),
    ("fallback", "Fallback"),
    ("iocp", "Iocp"),
];

fn parse_options(kind: Kind, attr: TokenStream) -> Result<Options, Error> {
    let mut opts = Options::default();
    let mut tokens = attr.into_iter().peekable();
    while let Some(tt) = tokens.next() {
        let TokenTree::Ident(key) = tt else {
            return Err(Error::new(
                tt.span(),
                format!("{}: expected an option name such as `backend`", kind.attr()),
            ));
        };
        match tokens.next() {
            Some(TokenTree::Punct(p)) if p.as_char() == '=' => {}
            other => {
                let span = other.map_or(key.span(), |t| t.span());
                return Err(Error::new(
                    span,
                    format!("{}: expected `{key} = value`", kind.attr()),
                ));
            }
        }
        let Some(TokenTree::Literal(value)) = tokens.next() else {
            return Err(Error::new(
                key.span(),
                format!("{}: `{key}` needs a literal value", kind.attr()),
            ));
        };
        let text = value.to_string();
        match key.to_string().as_str() {
            "backend" => {
                let name = text.trim_matches('"');
                let known = BACKENDS.iter().any(|(n, _)| *n == name);
                if !text.starts_with('"') || !known || (kind == Kind::Test && name == "auto") {
                    let names: Vec<&str> = BACKENDS
                        .iter()
                        .map(|(n, _)| *n)
                        .filter(|n| kind == Kind::Main || *n != "auto")
                        .collect();
                    return Err(Error::new(
                        value.span(),
                        format!(
                            "{}: `backend` is one of \"{}\"",
                            kind.attr(),
                            names.join("\", \"")
                        ),
                    ));
                }
                opts.backend = Some(name.to_string());
            }
            "pool" if kind == Kind::Main => {
                opts.pool = Some(text.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Error::new(
                        value.span(),
                        format!("{}: `pool` is a number of cores above 0", kind.attr()),
                    )
                })?);
            }
            "entries" => {
                opts.entries = Some(text.parse().map_err(|_| {
                    Error::new(
                        value.span(),
                        format!("{}: `entries` is a positive integer", kind.attr()),
                    )
                })?);
            }
            "timeout" if kind == Kind::Test => {
                opts.timeout = Some(text.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    Error::new(
                        value.span(),
                        format!(
                            "{}: `timeout` is a whole number of seconds above 0",
                            kind.attr()
                        ),
                    )
                })?);
            }
            other => {
                let known = match kind {
                    Kind::Main => "`backend`, `entries`, `pool`",
                    Kind::Test => "`backend`, `entries`, `timeout`",
                };
                return Err(Error::new(
                    key.span(),
                    format!("{}: unknown option `{other}` (known: {known})", kind.attr()),
                ));
            }
        }
        match tokens.next() {
            None => break,
            Some(TokenTree::Punct(p)) if p.as_char() == ',' => {}
            Some(t) => {
                return Err(Error::new(
                    t.span(),
                    format!("{}: options are separated by commas", kind.attr()),
                ))
            }
        }
    }
    Ok(opts)
}

/// The `coring::Builder` expression for the options (without the backend for a test,
/// which chooses it per run).
fn builder(opts: &Options, kind: Kind) -> String {
    let mut b = String::from("::coring::Builder::new()");
    if kind == Kind::Main {
        if let Some(name) = &opts.backend {
            let variant = BACKENDS.iter().find(|(n, _)| n == name).unwrap().1;
            b.push_str(&format!(".backend(::coring::BackendKind::{variant})"));
        }
    }
    if let Some(n) = opts.entries {
        b.push_str(&format!(".entries({n})"));
    }
    b
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> Result<TokenStream, Error> {
    let opts = parse_options(kind, attr)?;
    let tokens: Vec<TokenTree> = item.into_iter().collect();
    let fn_at = tokens
        .iter()
        .position(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "fn"))
        .ok_or_else(|| {
            Error::new(
                Span::call_site(),
                format!("{} goes on an `async fn`", kind.attr()),
            )
        })?;
    let async_at = tokens[..fn_at]
        .iter()
        .position(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "async"))
        .ok_or_else(|| {
            Error::new(
                tokens[fn_at].span(),
                format!(
                    "{} goes on an `async fn`: add `async` before `fn`",
                    kind.attr()
                ),
            )
        })?;
    let name = match tokens.get(fn_at + 1) {
        Some(TokenTree::Ident(i)) => i.clone(),
        _ => return Err(Error::new(tokens[fn_at].span(), "expected a function name")),
    };
    match tokens.get(fn_at + 2) {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis => {
            // With a pool, `main` may take the pool's handle as its one parameter.
            // One parameter: nothing after its comma, if it has one (rustfmt adds a
            // trailing comma to a parameter list it breaks over lines).
            let params: Vec<TokenTree> = g.stream().into_iter().collect();
            let comma = params
                .iter()
                .position(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','));
            let takes_handle = opts.pool.is_some() && comma.is_none_or(|at| at + 1 == params.len());
            if !g.stream().is_empty() && !takes_handle {
                let what = if opts.pool.is_some() {
                    "without parameters, or with one: the pool's `coring::PoolHandle`"
                } else {
                    "without parameters"
                };
                return Err(Error::new(
                    g.span(),
                    format!("{} takes a function {what}", kind.attr()),
                ));
            }
        }
        Some(t) => {
            return Err(Error::new(
                t.span(),
                format!(
                    "{} takes a function without parameters or generics",
                    kind.attr()
                ),
            ))
        }
        None => return Err(Error::new(name.span(), "expected a parameter list")),
    }
    if !matches!(tokens.last(), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace) {
        return Err(Error::new(
            name.span(),
            format!("{} needs a function with a body", kind.attr()),
        ));
    }
    // The user's function, unchanged but renamed, becomes an item inside the generated
    // one: its declared return type stays what the body's `?`s convert into, and its
    // attributes other than the generated function's (doc comments, `#[ignore]`...) stay
    // on the outer function.
    let first_sig = tokens[..async_at]
        .iter()
        .rposition(|t| matches!(t, TokenTree::Group(g) if g.delimiter() == Delimiter::Bracket))
        .map_or(0, |at| at + 1);
    let attrs: TokenStream = tokens[..first_sig].iter().cloned().collect();
    let vis: TokenStream = tokens[first_sig..async_at].iter().cloned().collect();
    let mut inner: Vec<TokenTree> = tokens[async_at..].to_vec();
    let inner_name = Ident::new("__coring_body", name.span());
    inner[fn_at - async_at + 1] = inner_name.into();
    let mut body: TokenStream = inner.into_iter().collect();
    let call = match kind {
        Kind::Main => match opts.pool {
            None => format!(
                "{}.build().unwrap_or_else(|e| ::core::panic!(\"coring::main: could not \
                 start the runtime: {{e}}\")).block_on(__coring_body())",
                builder(&opts, kind)
            ),
            Some(cores) => {
                let takes_handle = matches!(
                    tokens.get(fn_at + 2),
                    Some(TokenTree::Group(g)) if !g.stream().is_empty()
                );
                let body = if takes_handle {
                    "|__coring_handle| __coring_body(__coring_handle)"
                } else {
                    "|_| __coring_body()"
                };
                format!(
                    "::coring::__macro_support::run_on_pool({cores}, {}, {body})",
                    builder(&opts, kind)
                )
            }
        },
        Kind::Test => {
            let only = match &opts.backend {
                Some(name) => {
                    let variant = BACKENDS.iter().find(|(n, _)| n == name).unwrap().1;
                    format!("::core::option::Option::Some(::coring::BackendKind::{variant})")
                }
                None => "::core::option::Option::None".to_string(),
            };
            let timeout = match opts.timeout {
                Some(s) => {
                    format!("::core::option::Option::Some(::std::time::Duration::from_secs({s}))")
                }
                None => "::core::option::Option::None".to_string(),
            };
            format!(
                "::coring::__macro_support::run_test(\"{name}\", {}, {only}, {timeout}, \
                 __coring_body)",
                builder(&opts, kind)
            )
        }
    };
    body.extend(call.parse::<TokenStream>().expect("generated call parses"));
    // The outer function: `fn name()` returning what the user's returns (`main`), or
    // nothing (a test: each backend's result is checked inside).
    let mut out = attrs;
    if kind == Kind::Test {
        out.extend(
            "#[::core::prelude::v1::test]"
                .parse::<TokenStream>()
                .unwrap(),
        );
    }
    out.extend(vis);
    out.extend([
        TokenTree::Ident(Ident::new("fn", name.span())),
        TokenTree::Ident(name.clone()),
        TokenTree::Group(Group::new(Delimiter::Parenthesis, TokenStream::new())),
    ]);
    if kind == Kind::Main {
        let ret: TokenStream = tokens[fn_at + 3..tokens.len() - 1]
            .iter()
            .cloned()
            .collect();
        out.extend(ret);
    }
    out.extend([TokenTree::Group(Group::new(Delimiter::Brace, body))]);
    Ok(out)
}
