//! Lowering: rnix syntax tree → [`crate::ir::Expr`] with statically resolved variables.
//!
//! rnix accepts programs Nix rejects, so this pass also raises Nix's static errors (duplicate
//! attributes, duplicate formals, `@`-pattern clashes, undefined variables) with Nix's messages and
//! positions, and applies Nix's lexer rules that rnix does not (string escapes, CR/CRLF handling,
//! indented-string indentation stripping, operator desugaring). Invariant: the produced IR never
//! contains an unresolved name outside a `with`.

use std::collections::HashMap;
use std::rc::Rc;

use rnix::ast::{self, AstToken, HasEntry, InterpolPart};
use rnix::{SyntaxKind, SyntaxNode, TextRange};
use rowan::ast::AstNode;

use crate::error::{ErrorKind, EvalError, Result};
use crate::ir::{
    AttrDef, AttrKind, AttrName, AttrsExpr, BinOp, DynAttrDef, Expr, Formal, Formals, LambdaDef,
};
use crate::source::{self, Pos};
use crate::symbol::Symbol;
use crate::value::{NixString, Value};

/// Everything lowering needs to know about its surroundings.
pub struct LowerCtx<'a> {
    /// File index of the source.
    pub file: u32,
    /// Directory relative paths are resolved against.
    pub base_dir: String,
    /// The base environment (builtins, true, false, null, …).
    pub globals: &'a HashMap<Symbol, Value>,
    /// Extra outermost names (for `scopedImport`): slot i of the outermost frame.
    pub outer_names: Vec<Symbol>,
    /// `$HOME` for `~/…` paths.
    pub home: Option<String>,
    /// Pure mode (`~/…` paths are an error).
    pub pure: bool,
}

enum Scope {
    Names {
        names: Vec<Symbol>,
        index: Option<HashMap<Symbol, u32>>,
    },
    With(Pos),
}

impl Scope {
    fn names(names: Vec<Symbol>) -> Scope {
        let index = if names.len() > 8 {
            Some(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (*s, i as u32))
                    .collect(),
            )
        } else {
            None
        };
        Scope::Names { names, index }
    }
    fn lookup(&self, s: Symbol) -> Option<u32> {
        match self {
            Scope::Names { names, index } => match index {
                Some(ix) => ix.get(&s).copied(),
                None => names.iter().position(|n| *n == s).map(|p| p as u32),
            },
            _ => None,
        }
    }
}

struct Lowerer<'a> {
    ctx: &'a LowerCtx<'a>,
    scopes: Vec<Scope>,
    /// The source before lone-CR normalisation (same length; for indented strings).
    orig: &'a str,
    /// The first undefined variable: Nix finds those only when binding variables, after the
    /// whole file parsed, so any parse-time error (e.g. a duplicate attribute) found later in
    /// the text is reported instead.
    undefined: std::cell::RefCell<Option<EvalError>>,
}

/// Parses and lowers a registered source. The returned expression expects, at run time, an
/// environment whose frame count equals the number of outer scopes (one frame if `outer_names`
/// is non-empty, else none).
pub fn parse_and_lower(ctx: &LowerCtx<'_>, text: &str) -> Result<Rc<Expr>> {
    // Nix ends lines (and `#` comments) at a lone CR; rnix does not. Replace lone CRs by LF
    // (same length, so offsets are unchanged); indented strings, which keep CRs, read the
    // original text.
    let normalised;
    let orig = text;
    let text: &str = if text.contains('\r') {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        for (i, c) in text.char_indices() {
            if c == '\r' && b.get(i + 1) != Some(&b'\n') {
                out.push('\n');
            } else {
                out.push(c);
            }
        }
        normalised = out;
        &normalised
    } else {
        text
    };
    let parse = rnix::Root::parse(text);
    if let Some(err) = parse.errors().first() {
        return Err(parse_error(ctx.file, text, &parse.syntax(), err));
    }
    // A broken path (see [`broken_path`]) is looked for by `lower_path` on every path it
    // lowers; when lowering fails before it reached them all, the whole tree is searched, so
    // the parse error still wins over any binding-time error, as in Nix.
    let root = parse.tree();
    let Some(expr) = root.expr() else {
        return Err(
            EvalError::new(ErrorKind::Parse, "syntax error, unexpected end of file").at(Pos {
                file: ctx.file,
                offset: text.len() as u32,
            }),
        );
    };
    let mut l = Lowerer {
        ctx,
        scopes: Vec::new(),
        orig,
        undefined: std::cell::RefCell::new(None),
    };
    if !ctx.outer_names.is_empty() {
        l.scopes.push(Scope::names(ctx.outer_names.clone()));
    }
    let lowered = l.lower(&expr);
    let result = match (lowered, l.undefined.into_inner()) {
        (Ok(e), None) => return Ok(e),
        (Err(err), _) | (Ok(_), Some(err)) => err,
    };
    Err(broken_path(ctx.file, &parse.syntax()).unwrap_or(result))
}

/// rnix accepts a path followed by whitespace and `${…}` (`./a ${x}`) as one interpolated path
/// node (and its accessors then panic); Nix's lexer ends the path at the whitespace, so `${` is
/// an unexpected DOLLAR_CURLY. Reported like bison, expecting what may follow a complete
/// expression in the enclosing construct.
fn broken_path(file: u32, root: &SyntaxNode) -> Option<EvalError> {
    use SyntaxKind::*;
    // Looked for in the green tree first (no cursor node is built per visited node); the
    // position and expectation are worked out with cursors only when there is one.
    if !green_has_broken_path(root.green()) {
        return None;
    }
    let path = root.descendants().find(|n| {
        matches!(n.kind(), NODE_PATH_ABS | NODE_PATH_REL | NODE_PATH_HOME)
            && n.children_with_tokens().any(|c| {
                c.as_token().is_some_and(|t| {
                    !matches!(t.kind(), TOKEN_PATH_ABS | TOKEN_PATH_REL | TOKEN_PATH_HOME)
                })
            })
    })?;
    let mut after_gap = false;
    let mut offset = u32::from(path.text_range().end());
    for c in path.children_with_tokens() {
        let is_path_token = c
            .as_token()
            .is_some_and(|t| matches!(t.kind(), TOKEN_PATH_ABS | TOKEN_PATH_REL | TOKEN_PATH_HOME));
        if after_gap && c.as_token().is_none_or(|t| t.kind() != TOKEN_WHITESPACE) {
            offset = u32::from(c.text_range().start());
            break;
        }
        if c.as_token().is_some() && !is_path_token {
            after_gap = true;
        }
    }
    let mut expecting = None;
    let mut node = path.parent();
    while let Some(n) = node {
        match n.kind() {
            NODE_INTERPOL => expecting = Some("'}'"),
            NODE_PAREN => expecting = Some("')'"),
            NODE_ROOT => expecting = Some("end of file"),
            NODE_APPLY | NODE_BIN_OP | NODE_UNARY_OP => {
                node = n.parent();
                continue;
            }
            _ => {}
        }
        break;
    }
    let msg = match expecting {
        Some(x) => format!("syntax error, unexpected DOLLAR_CURLY, expecting {x}"),
        None => "syntax error, unexpected DOLLAR_CURLY".to_string(),
    };
    Some(EvalError::new(ErrorKind::Parse, msg).at(Pos { file, offset }))
}

/// Whether the green tree holds a path node with a child token that is not a path piece (see
/// [`broken_path`]).
fn green_has_broken_path(node: &rowan::GreenNodeData) -> bool {
    use SyntaxKind::*;
    let raw = |k: SyntaxKind| rowan::SyntaxKind(k as u16);
    let kind = node.kind();
    let is_path =
        kind == raw(NODE_PATH_ABS) || kind == raw(NODE_PATH_REL) || kind == raw(NODE_PATH_HOME);
    node.children().any(|c| match c {
        rowan::NodeOrToken::Node(n) => green_has_broken_path(n),
        rowan::NodeOrToken::Token(t) => {
            is_path
                && t.kind() != raw(TOKEN_PATH_ABS)
                && t.kind() != raw(TOKEN_PATH_REL)
                && t.kind() != raw(TOKEN_PATH_HOME)
        }
    })
}

fn token_name(kind: SyntaxKind, text: &str) -> String {
    use SyntaxKind::*;
    match kind {
        TOKEN_IDENT => "ID".into(),
        TOKEN_INTEGER => "INT_LIT".into(),
        TOKEN_FLOAT => "FLOAT_LIT".into(),
        TOKEN_URI => "URI".into(),
        TOKEN_PATH_ABS | TOKEN_PATH_REL => "PATH".into(),
        TOKEN_PATH_HOME => "HPATH".into(),
        TOKEN_PATH_SEARCH => "SPATH".into(),
        TOKEN_IF => "IF".into(),
        TOKEN_THEN => "THEN".into(),
        TOKEN_ELSE => "ELSE".into(),
        TOKEN_ASSERT => "ASSERT".into(),
        TOKEN_WITH => "WITH".into(),
        TOKEN_LET => "LET".into(),
        TOKEN_IN => "IN_KW".into(),
        TOKEN_REC => "REC".into(),
        TOKEN_INHERIT => "INHERIT".into(),
        TOKEN_EQUAL => "EQ".into(),
        TOKEN_NOT_EQUAL => "NEQ".into(),
        TOKEN_AND_AND => "AND".into(),
        TOKEN_OR_OR => "OR".into(),
        TOKEN_IMPLICATION => "IMPL".into(),
        TOKEN_OR => "OR_KW".into(),
        TOKEN_INTERPOL_START => "DOLLAR_CURLY".into(),
        TOKEN_ELLIPSIS => "ELLIPSIS".into(),
        TOKEN_LESS_OR_EQ => "LEQ".into(),
        TOKEN_MORE_OR_EQ => "GEQ".into(),
        TOKEN_UPDATE => "UPDATE".into(),
        TOKEN_CONCAT => "CONCAT".into(),
        TOKEN_PIPE_LEFT => "PIPE_FROM".into(),
        TOKEN_PIPE_RIGHT => "PIPE_INTO".into(),
        TOKEN_STRING_START | TOKEN_STRING_END if text == "''" => {
            if kind == TOKEN_STRING_START {
                "IND_STRING_OPEN".into()
            } else {
                "IND_STRING_CLOSE".into()
            }
        }
        TOKEN_STRING_CONTENT => "STR".into(),
        _ => {
            let t = text
                .chars()
                .next()
                .map(|c| c.to_string())
                .unwrap_or_default();
            format!("'{t}'")
        }
    }
}

fn wanted_name(kind: SyntaxKind) -> Option<String> {
    use SyntaxKind::*;
    Some(match kind {
        TOKEN_SEMICOLON => "';'".into(),
        TOKEN_R_PAREN => "')'".into(),
        TOKEN_R_BRACE => "'}'".into(),
        TOKEN_R_BRACK => "']'".into(),
        TOKEN_ASSIGN => "'='".into(),
        TOKEN_COLON => "':'".into(),
        TOKEN_ELSE => "ELSE".into(),
        TOKEN_THEN => "THEN".into(),
        TOKEN_IN => "IN_KW".into(),
        _ => return None,
    })
}

/// What Nix's parser would say it expected, from the syntactic context of the error.
fn context_expectation(root: &SyntaxNode, offset: u32, at_eof: bool) -> Option<&'static str> {
    use SyntaxKind::*;
    let start = if at_eof {
        root.descendants_with_tokens()
            .filter_map(|e| e.into_token())
            .filter(|t| t.kind() != TOKEN_WHITESPACE && t.kind() != TOKEN_COMMENT)
            .last()
            .and_then(|t| t.parent())
    } else {
        match root.covering_element(TextRange::empty(rnix::TextSize::from(offset))) {
            rowan::NodeOrToken::Node(n) => Some(n),
            rowan::NodeOrToken::Token(t) => t.parent(),
        }
    };
    let mut node = start;
    while let Some(n) = node {
        let has = |k: SyntaxKind| n.children_with_tokens().any(|c| c.kind() == k);
        let complete_leaf = matches!(
            n.kind(),
            NODE_IDENT
                | NODE_LITERAL
                | NODE_PAT_ENTRY
                | NODE_PAT_BIND
                | NODE_IDENT_PARAM
                | NODE_DYNAMIC
        ) || (matches!(n.kind(), NODE_ATTRPATH_VALUE | NODE_INHERIT)
            && has(TOKEN_SEMICOLON))
            || (n.kind() == NODE_STRING
                && n.children_with_tokens()
                    .filter(|c| c.kind() == TOKEN_STRING_END)
                    .count()
                    > 0)
            || (n.kind() == NODE_ATTRPATH && n.children().next().is_some());
        if at_eof && complete_leaf {
            node = n.parent();
            continue;
        }
        match n.kind() {
            NODE_ERROR | NODE_ROOT => {}
            NODE_PAREN => {
                return (n.children().next().is_some() && !has(TOKEN_R_PAREN)).then_some("')'");
            }
            NODE_SELECT | NODE_HAS_ATTR
                if !n
                    .children()
                    .any(|c| c.kind() == NODE_ATTRPATH && c.children().next().is_some()) =>
            {
                return Some("ID or OR_KW or DOLLAR_CURLY or '\"'");
            }
            NODE_ATTRPATH if n.children().next().is_none() => {
                return Some("ID or OR_KW or DOLLAR_CURLY or '\"'");
            }
            NODE_PATTERN => {
                return Some(if has(TOKEN_R_BRACE) {
                    "':' or '@'"
                } else {
                    "'}' or ','"
                });
            }
            NODE_LAMBDA => {
                if n.children()
                    .next()
                    .is_some_and(|c| c.kind() == NODE_PATTERN)
                    && !has(TOKEN_COLON)
                {
                    return Some("':' or '@'");
                }
                return None;
            }
            NODE_ATTR_SET => {
                if has(TOKEN_R_BRACE) {
                    return None;
                }
                return Some(if has(TOKEN_REC) {
                    "INHERIT or '}'"
                } else {
                    "INHERIT"
                });
            }
            NODE_LET_IN => return (!has(TOKEN_IN)).then_some("IN_KW or INHERIT"),
            NODE_IF_ELSE => {
                if !has(TOKEN_THEN) {
                    return Some("THEN");
                }
                if !has(TOKEN_ELSE) {
                    return Some("ELSE");
                }
                return None;
            }
            NODE_ASSERT | NODE_WITH => return (!has(TOKEN_SEMICOLON)).then_some("';'"),
            _ => return None,
        }
        node = n.parent();
    }
    None
}

fn parse_error(file: u32, text: &str, root: &SyntaxNode, err: &rnix::ParseError) -> EvalError {
    use rnix::ParseError as P;
    let at = |off: u32| Pos { file, offset: off };
    let eof = text.len() as u32;
    let toks: Vec<(SyntaxKind, &str, u32)> = {
        let mut off = 0u32;
        rnix::tokenize(text)
            .map(|(k, t)| {
                let o = off;
                off += t.len() as u32;
                (k, t, o)
            })
            .collect()
    };
    let significant =
        |k: SyntaxKind| k != SyntaxKind::TOKEN_WHITESPACE && k != SyntaxKind::TOKEN_COMMENT;
    // Lexer-level errors first: unclosed comments, bad paths, unterminated strings.
    for (i, (k, t, o)) in toks.iter().enumerate() {
        if *k == SyntaxKind::TOKEN_ERROR
            && (t.starts_with("./")
                || t.starts_with("../")
                || t.starts_with('/')
                || t.starts_with("~/"))
            && !t.starts_with("/*")
        {
            // Positions as Nix's lexer reports them (EOF right after the path shifts them).
            let end = *o + t.len() as u32;
            let at_eof = end >= eof;
            if t.ends_with('/') {
                let p = if at_eof { 0 } else { end };
                return EvalError::new(ErrorKind::Parse, "path has a trailing slash").at(at(p));
            }
            let p = match (at_eof, t.find("//")) {
                (false, Some(i)) => *o + i as u32 + 1,
                _ => *o,
            };
            return EvalError::new(
                ErrorKind::Parse,
                "syntax error, unexpected PATH_END, expecting DOLLAR_CURLY",
            )
            .at(at(p));
        }
        let unclosed_comment = t.starts_with("/*") && !(t.len() >= 4 && t.ends_with("*/"));
        if unclosed_comment && (*k == SyntaxKind::TOKEN_ERROR || *k == SyntaxKind::TOKEN_COMMENT) {
            let prev = toks[..i]
                .iter()
                .rev()
                .find(|x| significant(x.0))
                .map(|x| x.0);
            use SyntaxKind::*;
            let operand_end = matches!(
                prev,
                Some(
                    TOKEN_IDENT
                        | TOKEN_INTEGER
                        | TOKEN_FLOAT
                        | TOKEN_URI
                        | TOKEN_R_PAREN
                        | TOKEN_R_BRACK
                        | TOKEN_R_BRACE
                        | TOKEN_STRING_END
                        | TOKEN_PATH_ABS
                        | TOKEN_PATH_REL
                        | TOKEN_PATH_HOME
                        | TOKEN_PATH_SEARCH
                )
            );
            let (tok, o) = if operand_end {
                ("'*'", *o + 1)
            } else {
                ("'/'", *o)
            };
            return EvalError::new(ErrorKind::Parse, format!("syntax error, unexpected {tok}"))
                .at(at(o));
        }
        if matches!(
            k,
            SyntaxKind::TOKEN_PATH_ABS | SyntaxKind::TOKEN_PATH_REL | SyntaxKind::TOKEN_PATH_HOME
        ) {
            // A path token followed directly by a lone `/` (trailing slash or `//`).
            if let Some((nk, nt, _)) = toks.get(i + 1)
                && nt.starts_with('/')
                && !matches!(nk, SyntaxKind::TOKEN_WHITESPACE)
            {
                let double = toks
                    .get(i + 2)
                    .is_some_and(|x| significant(x.0) && x.0 != SyntaxKind::TOKEN_WHITESPACE);
                let msg = if double && *nt == "/" {
                    "syntax error, unexpected PATH_END, expecting DOLLAR_CURLY"
                } else {
                    "path has a trailing slash"
                };
                return EvalError::new(ErrorKind::Parse, msg).at(at(*o));
            }
            if t.ends_with('/') && t.len() > 1 {
                return EvalError::new(ErrorKind::Parse, "path has a trailing slash").at(at(*o));
            }
        }
    }
    let mut stack: Vec<bool> = Vec::new(); // true = inside a string, false = inside `${`
    for (k, t, _) in &toks {
        match k {
            SyntaxKind::TOKEN_STRING_START => stack.push(true),
            SyntaxKind::TOKEN_STRING_END => {
                stack.pop();
            }
            SyntaxKind::TOKEN_INTERPOL_START => stack.push(false),
            SyntaxKind::TOKEN_INTERPOL_END => {
                stack.pop();
            }
            _ => {}
        }
        let _ = t;
    }
    if stack.last() == Some(&true)
        || (stack.contains(&true) && matches!(err, P::UnexpectedEOF | P::UnexpectedEOFWanted(_)))
    {
        let opener = toks
            .iter()
            .rev()
            .find(|x| x.0 == SyntaxKind::TOKEN_STRING_START)
            .map(|x| x.1)
            .unwrap_or("\"");
        let exp = if opener == "''" {
            "IND_STR or DOLLAR_CURLY or IND_STRING_CLOSE"
        } else {
            "'\"'"
        };
        return EvalError::new(
            ErrorKind::Parse,
            format!("syntax error, unexpected end of file, expecting {exp}"),
        )
        .at(at(eof));
    }
    let tok_at = |off: u32| -> String {
        toks.iter()
            .find(|(k, _, o)| *o >= off && significant(*k))
            .map(|(k, t, _)| token_name(*k, t))
            .unwrap_or_else(|| "end of file".to_string())
    };
    let first_sig = |off: u32| -> u32 {
        toks.iter()
            .find(|(k, _, o)| *o >= off && significant(*k))
            .map(|x| x.2)
            .unwrap_or(eof)
    };
    let with_exp = |base: String, exp: Option<String>| match exp {
        Some(e) => format!("{base}, expecting {e}"),
        None => base,
    };
    let (msg, off) = match err {
        P::UnexpectedExtra(r) => {
            let o = first_sig(u32::from(r.start()));
            let t = tok_at(o);
            // Non-associative operators fail in a state where bison lists no expectation.
            if ["EQ", "NEQ", "'<'", "'>'", "LEQ", "GEQ"].contains(&t.as_str()) {
                (format!("syntax error, unexpected {t}"), o)
            } else {
                (
                    format!("syntax error, unexpected {t}, expecting end of file"),
                    o,
                )
            }
        }
        P::Unexpected(r) | P::UnexpectedDoubleBind(r) => {
            let o = first_sig(u32::from(r.start()));
            let exp = context_expectation(root, o, false).map(str::to_string);
            (
                with_exp(format!("syntax error, unexpected {}", tok_at(o)), exp),
                o,
            )
        }
        P::UnexpectedWanted(_, r, wanted) => {
            let o = first_sig(u32::from(r.start()));
            let exp = context_expectation(root, o, false)
                .map(str::to_string)
                .or_else(|| {
                    if wanted.len() == 1 {
                        wanted_name(wanted[0])
                    } else {
                        None
                    }
                });
            (
                with_exp(format!("syntax error, unexpected {}", tok_at(o)), exp),
                o,
            )
        }
        P::UnexpectedEOF => {
            let exp = context_expectation(root, eof, true).map(str::to_string);
            (
                with_exp("syntax error, unexpected end of file".to_string(), exp),
                eof,
            )
        }
        P::UnexpectedEOFWanted(wanted) => {
            let exp = context_expectation(root, eof, true)
                .map(str::to_string)
                .or_else(|| {
                    if wanted.len() == 1 {
                        wanted_name(wanted[0])
                    } else {
                        None
                    }
                });
            (
                with_exp("syntax error, unexpected end of file".to_string(), exp),
                eof,
            )
        }
        P::DuplicatedArgs(r, name) => (
            format!("duplicate formal function argument '{name}'"),
            u32::from(r.start()),
        ),
        P::RecursionLimitExceeded => ("syntax error, expression nested too deeply".to_string(), 0),
        _ => ("syntax error".to_string(), 0),
    };
    EvalError::new(ErrorKind::Parse, msg).at(at(off))
}

// ---------------------------------------------------------------------------------------------
// Attribute-set building (first pass: structure, merging, duplicate detection)

enum PVal {
    Expr(ast::Expr),
    Nested(Box<PAttrs>),
    Inherit,
    InheritFrom(usize),
}

struct PAttr {
    name: Symbol,
    pos: Pos,
    val: PVal,
}

struct PDyn {
    name: ast::Expr,
    name_pos: Pos,
    pos: Pos,
    val: PVal,
}

struct PAttrs {
    rec: bool,
    attrs: Vec<PAttr>,
    index: HashMap<Symbol, usize>,
    dynamic: Vec<PDyn>,
    inherit_from: Vec<ast::Expr>,
    pos: Pos,
}

impl PAttrs {
    fn new(rec: bool, pos: Pos) -> PAttrs {
        PAttrs {
            rec,
            attrs: Vec::new(),
            index: HashMap::new(),
            dynamic: Vec::new(),
            inherit_from: Vec::new(),
            pos,
        }
    }
}

enum KeyName {
    Static(Symbol),
    Dynamic(ast::Expr, Pos),
}

fn strip_parens(e: ast::Expr) -> ast::Expr {
    let mut e = e;
    while let ast::Expr::Paren(p) = &e {
        match p.expr() {
            Some(inner) => e = inner,
            None => break,
        }
    }
    e
}

fn show_path(path: &[Symbol]) -> String {
    path.iter()
        .map(|s| s.as_string())
        .collect::<Vec<_>>()
        .join(".")
}

impl<'a> Lowerer<'a> {
    fn pos_of(&self, n: &SyntaxNode) -> Pos {
        Pos {
            file: self.ctx.file,
            offset: u32::from(n.text_range().start()),
        }
    }
    fn pos_off(&self, off: rnix::TextSize) -> Pos {
        Pos {
            file: self.ctx.file,
            offset: u32::from(off),
        }
    }

    fn key_name(&mut self, a: &ast::Attr) -> Result<KeyName> {
        match a {
            ast::Attr::Ident(i) => Ok(KeyName::Static(ident_sym(i))),
            ast::Attr::Str(s) => match self.static_string(s)? {
                Some(b) => Ok(KeyName::Static(Symbol::intern_bytes(&b))),
                None => Ok(KeyName::Dynamic(
                    ast::Expr::Str(s.clone()),
                    self.pos_of(s.syntax()),
                )),
            },
            ast::Attr::Dynamic(d) => {
                let inner = d.expr().ok_or_else(|| self.syntax_err(d.syntax()))?;
                // `${"a"}` with a literal string is static in Nix.
                if let ast::Expr::Str(s) = &inner
                    && let Some(b) = self.static_string(s)?
                {
                    return Ok(KeyName::Static(Symbol::intern_bytes(&b)));
                }
                Ok(KeyName::Dynamic(inner, self.pos_of(d.syntax())))
            }
        }
    }

    fn syntax_err(&self, n: &SyntaxNode) -> EvalError {
        EvalError::new(ErrorKind::Parse, "syntax error, unexpected end of file").at(self.pos_of(n))
    }

    fn dup_attr(&self, shown: &str, pos: Pos, prev: Pos) -> EvalError {
        EvalError::new(
            ErrorKind::Parse,
            format!(
                "attribute '{}' already defined at {}",
                shown,
                source::pos_string(prev)
            ),
        )
        .at(pos)
    }

    fn build_attrs(&mut self, node: &impl HasEntry, rec: bool, pos: Pos) -> Result<PAttrs> {
        let mut p = PAttrs::new(rec, pos);
        self.add_entries(&mut p, node)?;
        Ok(p)
    }

    fn add_entries(&mut self, p: &mut PAttrs, node: &impl HasEntry) -> Result<()> {
        for entry in node.entries() {
            match entry {
                ast::Entry::Inherit(inh) => {
                    let from_idx = match inh.from() {
                        Some(f) => {
                            let e = f.expr().ok_or_else(|| self.syntax_err(f.syntax()))?;
                            p.inherit_from.push(e);
                            Some(p.inherit_from.len() - 1)
                        }
                        None => None,
                    };
                    for a in inh.attrs() {
                        let apos = self.pos_of(a.syntax());
                        let sym = match self.key_name(&a)? {
                            KeyName::Static(s) => s,
                            KeyName::Dynamic(_, dpos) => {
                                return Err(EvalError::new(
                                    ErrorKind::Parse,
                                    "dynamic attributes not allowed in inherit",
                                )
                                .at(dpos));
                            }
                        };
                        if let Some(&j) = p.index.get(&sym) {
                            return Err(self.dup_attr(&sym.as_string(), apos, p.attrs[j].pos));
                        }
                        let val = match from_idx {
                            Some(i) => PVal::InheritFrom(i),
                            None => PVal::Inherit,
                        };
                        p.index.insert(sym, p.attrs.len());
                        p.attrs.push(PAttr {
                            name: sym,
                            pos: apos,
                            val,
                        });
                    }
                }
                ast::Entry::AttrpathValue(av) => {
                    let path_node = av.attrpath().ok_or_else(|| self.syntax_err(av.syntax()))?;
                    let value = av.value().ok_or_else(|| self.syntax_err(av.syntax()))?;
                    let pos = self.pos_of(path_node.syntax());
                    let mut keys = Vec::new();
                    for a in path_node.attrs() {
                        keys.push(self.key_name(&a)?);
                    }
                    let value = strip_parens(value);
                    let val = match &value {
                        ast::Expr::AttrSet(s) => {
                            let spos = self.pos_of(s.syntax());
                            PVal::Nested(Box::new(self.build_attrs(
                                s,
                                s.rec_token().is_some(),
                                spos,
                            )?))
                        }
                        _ => PVal::Expr(value),
                    };
                    self.add_attr(p, keys, val, pos, &mut Vec::new())?;
                }
            }
        }
        Ok(())
    }

    fn add_attr(
        &mut self,
        p: &mut PAttrs,
        mut keys: Vec<KeyName>,
        val: PVal,
        pos: Pos,
        shown: &mut Vec<Symbol>,
    ) -> Result<()> {
        let first = keys.remove(0);
        if keys.is_empty() {
            match first {
                KeyName::Static(s) => {
                    shown.push(s);
                    if let Some(&j) = p.index.get(&s) {
                        let existing = &mut p.attrs[j];
                        if let (PVal::Nested(_), PVal::Nested(_)) = (&existing.val, &val) {
                            let PVal::Nested(mut ae) = val else {
                                unreachable!("matched above")
                            };
                            let PVal::Nested(target) = &mut existing.val else {
                                unreachable!("matched above")
                            };
                            let shift = target.inherit_from.len();
                            target.inherit_from.append(&mut ae.inherit_from);
                            for ad in ae.attrs.drain(..) {
                                let v = match ad.val {
                                    PVal::InheritFrom(i) => PVal::InheritFrom(i + shift),
                                    other => other,
                                };
                                let mut sh = shown.clone();
                                self.add_attr(
                                    target,
                                    vec![KeyName::Static(ad.name)],
                                    v,
                                    ad.pos,
                                    &mut sh,
                                )?;
                            }
                            for d in ae.dynamic.drain(..) {
                                target.dynamic.push(d);
                            }
                            return Ok(());
                        }
                        return Err(self.dup_attr(&show_path(shown), pos, existing.pos));
                    }
                    p.index.insert(s, p.attrs.len());
                    p.attrs.push(PAttr { name: s, pos, val });
                }
                KeyName::Dynamic(e, npos) => {
                    p.dynamic.push(PDyn {
                        name: e,
                        name_pos: npos,
                        pos,
                        val,
                    });
                }
            }
            return Ok(());
        }
        match first {
            KeyName::Static(s) => {
                shown.push(s);
                let j = match p.index.get(&s) {
                    Some(&j) => {
                        if !matches!(p.attrs[j].val, PVal::Nested(_)) {
                            return Err(self.dup_attr(&show_path(shown), pos, p.attrs[j].pos));
                        }
                        j
                    }
                    None => {
                        p.index.insert(s, p.attrs.len());
                        p.attrs.push(PAttr {
                            name: s,
                            pos,
                            val: PVal::Nested(Box::new(PAttrs::new(false, pos))),
                        });
                        p.attrs.len() - 1
                    }
                };
                let PVal::Nested(nested) = &mut p.attrs[j].val else {
                    unreachable!("checked")
                };
                self.add_attr(nested, keys, val, pos, shown)
            }
            KeyName::Dynamic(e, npos) => {
                let mut nested = PAttrs::new(false, pos);
                self.add_attr(&mut nested, keys, val, pos, shown)?;
                p.dynamic.push(PDyn {
                    name: e,
                    name_pos: npos,
                    pos,
                    val: PVal::Nested(Box::new(nested)),
                });
                Ok(())
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Second pass: PAttrs → AttrsExpr

    /// `is_let`: bindings of a `let` (recursive; dynamic attributes dropped).
    fn lower_pattrs(&mut self, p: PAttrs, is_let: bool) -> Result<AttrsExpr> {
        Ok(self.lower_pattrs_body(p, is_let, None)?.0)
    }

    /// Lowers bindings; `body` (for `let`) is lowered inside the bindings' scopes.
    ///
    /// Frames (as Nix): a recursive set / let pushes one frame with a slot per static attribute;
    /// `inherit (e)` sources live in a further frame above it (their expressions see the
    /// recursive frame); plain values see the recursive frame, `inherit x` the enclosing one.
    fn lower_pattrs_body(
        &mut self,
        mut p: PAttrs,
        is_let: bool,
        body: Option<&ast::Expr>,
    ) -> Result<(AttrsExpr, Option<Rc<Expr>>)> {
        let rec = p.rec || is_let;
        if is_let && !p.dynamic.is_empty() {
            return Err(
                EvalError::new(ErrorKind::Parse, "dynamic attributes not allowed in let").at(p.pos),
            );
        }
        p.attrs.sort_by_key(|a| a.name);
        if rec {
            self.scopes
                .push(Scope::names(p.attrs.iter().map(|a| a.name).collect()));
        }
        let result = self.lower_bindings(&mut p, rec, body);
        if rec {
            self.scopes.pop();
        }
        let (attrs, dynamic, inherit_from, body) = result?;
        Ok((
            AttrsExpr {
                rec,
                attrs,
                dynamic,
                inherit_from,
                pos: p.pos,
            },
            body,
        ))
    }

    #[allow(clippy::type_complexity)]
    fn lower_bindings(
        &mut self,
        p: &mut PAttrs,
        rec: bool,
        body: Option<&ast::Expr>,
    ) -> Result<(
        Vec<AttrDef>,
        Vec<DynAttrDef>,
        Vec<Rc<Expr>>,
        Option<Rc<Expr>>,
    )> {
        let mut inherit_from = Vec::new();
        for e in std::mem::take(&mut p.inherit_from) {
            inherit_from.push(self.lower(&e)?);
        }
        let mut attrs = Vec::with_capacity(p.attrs.len());
        for a in p.attrs.drain(..) {
            let (value, kind) = match a.val {
                PVal::Expr(e) => (self.lower_named(&e, Some(a.name))?, AttrKind::Plain),
                PVal::Nested(n) => (
                    Rc::new(Expr::Attrs(Box::new(self.lower_pattrs(*n, false)?))),
                    AttrKind::Plain,
                ),
                PVal::Inherit => {
                    if rec {
                        let s = self.scopes.pop().expect("rec scope pushed");
                        let v = self.resolve(a.name, a.pos);
                        self.scopes.push(s);
                        (v?, AttrKind::Inherited)
                    } else {
                        (self.resolve(a.name, a.pos)?, AttrKind::Inherited)
                    }
                }
                PVal::InheritFrom(i) => {
                    let from = Rc::new(Expr::Var {
                        depth: 0,
                        slot: i as u32,
                        pos: a.pos,
                    });
                    (
                        Rc::new(Expr::Select {
                            e: from,
                            path: Box::new([AttrName::Static(a.name)]),
                            default: None,
                            pos: a.pos,
                        }),
                        AttrKind::InheritedFrom,
                    )
                }
            };
            attrs.push(AttrDef {
                name: a.name,
                value,
                pos: a.pos,
                kind,
            });
        }
        let mut dynamic = Vec::new();
        for d in p.dynamic.drain(..) {
            let name = self.lower(&d.name)?;
            let _ = d.name_pos;
            let value = match d.val {
                PVal::Expr(e) => self.lower(&e)?,
                PVal::Nested(n) => Rc::new(Expr::Attrs(Box::new(self.lower_pattrs(*n, false)?))),
                PVal::Inherit | PVal::InheritFrom(_) => unreachable!("inherit is never dynamic"),
            };
            dynamic.push(DynAttrDef {
                name,
                value,
                pos: d.pos,
            });
        }
        let body = body.map(|b| self.lower(b)).transpose()?;
        Ok((attrs, dynamic, inherit_from, body))
    }

    // -----------------------------------------------------------------------------------------
    // Variables

    fn resolve(&self, name: Symbol, pos: Pos) -> Result<Rc<Expr>> {
        let mut withs = Vec::new();
        for (depth, scope) in self.scopes.iter().rev().enumerate() {
            match scope {
                Scope::With(p) => withs.push((depth as u32, *p)),
                Scope::Names { .. } => {
                    if let Some(slot) = scope.lookup(name) {
                        return Ok(Rc::new(Expr::Var {
                            depth: depth as u32,
                            slot,
                            pos,
                        }));
                    }
                }
            }
        }
        if self.ctx.globals.contains_key(&name) {
            let slot = crate::source::lowered::global_slot(name);
            return Ok(Rc::new(Expr::Global(slot, pos)));
        }
        if !withs.is_empty() {
            return Ok(Rc::new(Expr::WithVar {
                name,
                withs: withs.into_boxed_slice(),
                pos,
            }));
        }
        let mut first = self.undefined.borrow_mut();
        if first.is_none() {
            *first = Some(
                EvalError::new(
                    ErrorKind::UndefinedVar,
                    format!("undefined variable '{name}'"),
                )
                .at(pos),
            );
        }
        // Never evaluated: the lowering as a whole fails.
        Ok(Rc::new(Expr::Const(Value::Null)))
    }

    // -----------------------------------------------------------------------------------------
    // Expressions

    fn lower_named(&mut self, e: &ast::Expr, name: Option<Symbol>) -> Result<Rc<Expr>> {
        let e = strip_parens(e.clone());
        if let ast::Expr::Lambda(l) = &e {
            return self.lower_lambda(l, name);
        }
        self.lower(&e)
    }

    fn lower(&mut self, e: &ast::Expr) -> Result<Rc<Expr>> {
        let pos = self.pos_of(e.syntax());
        Ok(Rc::new(match e {
            ast::Expr::Paren(p) => {
                let inner = p.expr().ok_or_else(|| self.syntax_err(p.syntax()))?;
                return self.lower(&inner);
            }
            ast::Expr::Root(r) => {
                let inner = r.expr().ok_or_else(|| self.syntax_err(r.syntax()))?;
                return self.lower(&inner);
            }
            ast::Expr::Error(n) => return Err(self.syntax_err(n.syntax())),
            ast::Expr::Literal(l) => self.lower_literal(l)?,
            ast::Expr::Ident(i) => {
                return self.resolve(ident_sym(i), pos);
            }
            ast::Expr::Str(s) => self.lower_string(s)?,
            ast::Expr::PathAbs(_) | ast::Expr::PathRel(_) | ast::Expr::PathHome(_) => {
                self.lower_path(e, pos)?
            }
            ast::Expr::PathSearch(p) => {
                let content = p
                    .content()
                    .map(|c| c.text().to_string())
                    .unwrap_or_default();
                let name = content
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string();
                let f = self.resolve(Symbol::intern("__findFile"), pos)?;
                let np = self.resolve(Symbol::intern("__nixPath"), pos)?;
                Expr::Call {
                    f,
                    args: Box::new([np, Rc::new(Expr::Const(Value::str(&name)))]),
                    pos,
                }
            }
            ast::Expr::List(l) => {
                let mut items = Vec::new();
                for it in l.items() {
                    items.push(self.lower(&it)?);
                }
                Expr::List(items.into_boxed_slice())
            }
            ast::Expr::AttrSet(s) => {
                let p = self.build_attrs(s, s.rec_token().is_some(), pos)?;
                Expr::Attrs(Box::new(self.lower_pattrs(p, false)?))
            }
            ast::Expr::LetIn(l) => {
                let p = self.build_attrs(l, true, pos)?;
                let body = l.body().ok_or_else(|| self.syntax_err(l.syntax()))?;
                // Lower bindings and body in the same scopes.
                let attrs = self.lower_let(p, &body)?;
                return Ok(attrs);
            }
            ast::Expr::LegacyLet(l) => {
                let p = self.build_attrs(l, true, pos)?;
                let attrs = self.lower_pattrs(p, false)?;
                Expr::Select {
                    e: Rc::new(Expr::Attrs(Box::new(attrs))),
                    path: Box::new([AttrName::Static(Symbol::intern("body"))]),
                    default: None,
                    pos: Pos::NONE,
                }
            }
            ast::Expr::Lambda(l) => return self.lower_lambda(l, None),
            ast::Expr::Apply(_) => {
                let mut args = Vec::new();
                let mut cur = e.clone();
                while let ast::Expr::Apply(a) = &cur {
                    let arg = a.argument().ok_or_else(|| self.syntax_err(a.syntax()))?;
                    args.push(arg);
                    cur = a.lambda().ok_or_else(|| self.syntax_err(a.syntax()))?;
                }
                let f = self.lower(&cur)?;
                let mut largs = Vec::new();
                for a in args.iter().rev() {
                    largs.push(self.lower(a)?);
                }
                // Nix's `makeCall` appends to a call in function position, even through
                // parentheses (`(f a) b` is `f a b`, positioned at the inner call; operators
                // Nix desugars to calls, like `(a - b) c`, too).
                if let Expr::Call {
                    f: inner_f,
                    args: inner_args,
                    pos: inner_pos,
                } = &*f
                {
                    let mut all = inner_args.to_vec();
                    all.extend(largs);
                    return Ok(Rc::new(Expr::Call {
                        f: inner_f.clone(),
                        args: all.into_boxed_slice(),
                        pos: *inner_pos,
                    }));
                }
                Expr::Call {
                    f,
                    args: largs.into_boxed_slice(),
                    pos,
                }
            }
            ast::Expr::Select(s) => {
                let inner = s.expr().ok_or_else(|| self.syntax_err(s.syntax()))?;
                let inner = self.lower(&inner)?;
                let path = self.lower_attrpath(s.attrpath())?;
                let default = match s.default_expr() {
                    Some(d) => Some(self.lower(&d)?),
                    None => None,
                };
                Expr::Select {
                    e: inner,
                    path,
                    default,
                    pos,
                }
            }
            ast::Expr::HasAttr(h) => {
                let inner = h.expr().ok_or_else(|| self.syntax_err(h.syntax()))?;
                let inner = self.lower(&inner)?;
                let path = self.lower_attrpath(h.attrpath())?;
                let qpos = h
                    .question_token()
                    .map(|t| self.pos_off(t.text_range().start()))
                    .unwrap_or(pos);
                Expr::HasAttr {
                    e: inner,
                    path,
                    pos: qpos,
                }
            }
            ast::Expr::With(w) => {
                let ns = w.namespace().ok_or_else(|| self.syntax_err(w.syntax()))?;
                let ns = self.lower(&ns)?;
                self.scopes.push(Scope::With(pos));
                let body = w.body().ok_or_else(|| self.syntax_err(w.syntax()));
                let body = body.and_then(|b| self.lower(&b));
                self.scopes.pop();
                Expr::With {
                    ns,
                    body: body?,
                    pos,
                }
            }
            ast::Expr::IfElse(i) => {
                let c = i.condition().ok_or_else(|| self.syntax_err(i.syntax()))?;
                let t = i.body().ok_or_else(|| self.syntax_err(i.syntax()))?;
                let f = i.else_body().ok_or_else(|| self.syntax_err(i.syntax()))?;
                Expr::If {
                    cond: self.lower(&c)?,
                    then: self.lower(&t)?,
                    else_: self.lower(&f)?,
                    pos,
                }
            }
            ast::Expr::Assert(a) => {
                let c = a.condition().ok_or_else(|| self.syntax_err(a.syntax()))?;
                let b = a.body().ok_or_else(|| self.syntax_err(a.syntax()))?;
                let text = crate::show::show_in(&c, &self.ctx.base_dir).into_boxed_str();
                Expr::Assert {
                    cond: self.lower(&c)?,
                    body: self.lower(&b)?,
                    pos,
                    text,
                }
            }
            ast::Expr::UnaryOp(u) => {
                let inner = u.expr().ok_or_else(|| self.syntax_err(u.syntax()))?;
                let inner = self.lower(&inner)?;
                match u.operator() {
                    // Nix's ExprOpNot reports its operand's position.
                    Some(ast::UnaryOpKind::Invert) => Expr::Not {
                        pos: inner.pos(),
                        e: inner,
                    },
                    _ => {
                        let f = self.resolve(Symbol::intern("__sub"), pos)?;
                        Expr::Call {
                            f,
                            args: Box::new([Rc::new(Expr::Const(Value::Int(0))), inner]),
                            pos,
                        }
                    }
                }
            }
            ast::Expr::BinOp(b) => self.lower_binop(b)?,
            ast::Expr::CurPos(_) => Expr::CurPos(pos),
        }))
    }

    fn lower_let(&mut self, p: PAttrs, body: &ast::Expr) -> Result<Rc<Expr>> {
        let (attrs, body) = self.lower_pattrs_body(p, true, Some(body))?;
        let body = body.expect("body requested");
        Ok(Rc::new(Expr::Let {
            attrs: Box::new(attrs),
            body,
        }))
    }

    fn lower_attrpath(&mut self, ap: Option<ast::Attrpath>) -> Result<Box<[AttrName]>> {
        let ap = ap.ok_or_else(|| EvalError::new(ErrorKind::Parse, "syntax error"))?;
        let mut out = Vec::new();
        for a in ap.attrs() {
            match self.key_name(&a)? {
                KeyName::Static(s) => out.push(AttrName::Static(s)),
                KeyName::Dynamic(e, p) => out.push(AttrName::Dynamic(self.lower(&e)?, p)),
            }
        }
        Ok(out.into_boxed_slice())
    }

    fn lower_binop(&mut self, b: &ast::BinOp) -> Result<Expr> {
        let l = b.lhs().ok_or_else(|| self.syntax_err(b.syntax()))?;
        let r = b.rhs().ok_or_else(|| self.syntax_err(b.syntax()))?;
        let op_tok = b
            .syntax()
            .children_with_tokens()
            .filter_map(|c| c.into_token())
            .find(|t| ast::BinOpKind::from_kind(t.kind()).is_some())
            .ok_or_else(|| self.syntax_err(b.syntax()))?;
        let op =
            ast::BinOpKind::from_kind(op_tok.kind()).ok_or_else(|| self.syntax_err(b.syntax()))?;
        let pos = self.pos_off(op_tok.text_range().start());
        let lpos = self.pos_of(l.syntax());
        let rpos = self.pos_of(r.syntax());
        let le = self.lower(&l)?;
        let re = self.lower(&r)?;
        let call = |this: &Self, name: &str, args: Vec<Rc<Expr>>| -> Result<Expr> {
            let f = this.resolve(Symbol::intern(name), pos)?;
            Ok(Expr::Call {
                f,
                args: args.into_boxed_slice(),
                pos,
            })
        };
        use ast::BinOpKind as K;
        Ok(match op {
            K::Add => Expr::Concat {
                parts: Box::new([(lpos, le), (rpos, re)]),
                pos,
                force_string: false,
            },
            K::Sub => call(self, "__sub", vec![le, re])?,
            K::Mul => call(self, "__mul", vec![le, re])?,
            K::Div => call(self, "__div", vec![le, re])?,
            K::Less => call(self, "__lessThan", vec![le, re])?,
            K::More => call(self, "__lessThan", vec![re, le])?,
            K::LessOrEq => Expr::Not {
                e: Rc::new(call(self, "__lessThan", vec![re, le])?),
                pos,
            },
            K::MoreOrEq => Expr::Not {
                e: Rc::new(call(self, "__lessThan", vec![le, re])?),
                pos,
            },
            K::Concat => Expr::Op {
                op: BinOp::ConcatLists,
                l: le,
                r: re,
                pos,
            },
            K::Update => Expr::Op {
                op: BinOp::Update,
                l: le,
                r: re,
                pos,
            },
            K::And => Expr::Op {
                op: BinOp::And,
                l: le,
                r: re,
                pos,
            },
            K::Or => Expr::Op {
                op: BinOp::Or,
                l: le,
                r: re,
                pos,
            },
            K::Implication => Expr::Op {
                op: BinOp::Impl,
                l: le,
                r: re,
                pos,
            },
            K::Equal => Expr::Op {
                op: BinOp::Eq,
                l: le,
                r: re,
                pos,
            },
            K::NotEqual => Expr::Op {
                op: BinOp::NEq,
                l: le,
                r: re,
                pos,
            },
            K::PipeRight => {
                return Err(EvalError::new(
                    ErrorKind::Parse,
                    "experimental Nix feature 'pipe-operators' is disabled; add '--extra-experimental-features pipe-operators' to enable it",
                )
                .at(pos));
            }
            K::PipeLeft => {
                return Err(EvalError::new(
                    ErrorKind::Parse,
                    "experimental Nix feature 'pipe-operators' is disabled; add '--extra-experimental-features pipe-operators' to enable it",
                )
                .at(pos));
            }
        })
    }

    fn lower_lambda(&mut self, l: &ast::Lambda, name: Option<Symbol>) -> Result<Rc<Expr>> {
        let pos = self.pos_of(l.syntax());
        let param = l.param().ok_or_else(|| self.syntax_err(l.syntax()))?;
        let body_ast = l.body().ok_or_else(|| self.syntax_err(l.syntax()))?;
        let (arg, formals_ast) = match &param {
            ast::Param::IdentParam(ip) => {
                let i = ip.ident().ok_or_else(|| self.syntax_err(ip.syntax()))?;
                (Some(ident_sym(&i)), None)
            }
            ast::Param::Pattern(p) => {
                let at = match p.pat_bind() {
                    Some(b) => {
                        let i = b.ident().ok_or_else(|| self.syntax_err(b.syntax()))?;
                        Some(ident_sym(&i))
                    }
                    None => None,
                };
                (at, Some(p.clone()))
            }
        };
        let mut slots: Vec<Symbol> = Vec::new();
        if let Some(a) = arg {
            slots.push(a);
        }
        let mut formals = None;
        let mut defaults_ast = Vec::new();
        if let Some(p) = &formals_ast {
            let mut entries: Vec<(Symbol, Pos, Option<ast::Expr>)> = Vec::new();
            for pe in p.pat_entries() {
                let i = pe.ident().ok_or_else(|| self.syntax_err(pe.syntax()))?;
                let s = ident_sym(&i);
                let fpos = self.pos_of(pe.syntax());
                if entries.iter().any(|(n, _, _)| *n == s) {
                    return Err(EvalError::new(
                        ErrorKind::Parse,
                        format!("duplicate formal function argument '{s}'"),
                    )
                    .at(fpos));
                }
                entries.push((s, fpos, pe.default()));
            }
            if let Some(a) = arg
                && entries.iter().any(|(n, _, _)| *n == a)
            {
                return Err(EvalError::new(
                    ErrorKind::Parse,
                    format!("duplicate formal function argument '{a}'"),
                )
                .at(pos));
            }
            entries.sort_by_key(|(n, _, _)| *n);
            for (s, _, _) in &entries {
                slots.push(*s);
            }
            defaults_ast = entries;
            formals = Some(p.ellipsis_token().is_some());
        }
        self.scopes.push(Scope::names(slots));
        let result = (|| -> Result<(Option<Formals>, Rc<Expr>)> {
            let f = match formals {
                Some(ellipsis) => {
                    let mut entries = Vec::new();
                    for (s, fpos, d) in defaults_ast.drain(..) {
                        let default = match d {
                            Some(d) => Some(self.lower(&d)?),
                            None => None,
                        };
                        entries.push(Formal {
                            name: s,
                            default,
                            pos: fpos,
                        });
                    }
                    Some(Formals { entries, ellipsis })
                }
                None => None,
            };
            let body = self.lower(&body_ast)?;
            Ok((f, body))
        })();
        self.scopes.pop();
        let (formals, body) = result?;
        Ok(Rc::new(Expr::Lambda(Rc::new(LambdaDef {
            name,
            pos,
            arg,
            formals,
            body,
        }))))
    }

    fn lower_literal(&mut self, l: &ast::Literal) -> Result<Expr> {
        let pos = self.pos_of(l.syntax());
        Ok(match l.kind() {
            ast::LiteralKind::Integer(i) => match i.value() {
                Ok(v) => Expr::Const(Value::Int(v)),
                Err(_) => {
                    return Err(EvalError::new(
                        ErrorKind::Parse,
                        format!("invalid integer '{}'", i.syntax().text()),
                    )
                    .at(pos));
                }
            },
            ast::LiteralKind::Float(f) => match f.value() {
                Ok(v) => Expr::Const(Value::Float(v)),
                Err(_) => {
                    return Err(EvalError::new(
                        ErrorKind::Parse,
                        format!("invalid float '{}'", f.syntax().text()),
                    )
                    .at(pos));
                }
            },
            ast::LiteralKind::Uri(u) => {
                Expr::Const(Value::string(source::unmap_bytes(u.syntax().text())))
            }
        })
    }

    /// Nix rejects string literals containing NUL bytes at parse time.
    fn check_nul(&self, s: &ast::Str) -> Result<()> {
        for p in s.parts() {
            if let InterpolPart::Literal(c) = p
                && c.syntax().text().contains('\0')
            {
                let shown =
                    String::from_utf8_lossy(&unescape_normal(c.syntax().text())).replace('\0', "␀");
                return Err(EvalError::new(
                    ErrorKind::Parse,
                    format!("input string '{shown}' cannot be represented as Nix string because it contains null bytes"),
                )
                .at(self.pos_off(c.syntax().text_range().start())));
            }
        }
        Ok(())
    }

    /// A string with no interpolation, as bytes (None if it interpolates).
    fn static_string(&mut self, s: &ast::Str) -> Result<Option<Vec<u8>>> {
        self.check_nul(s)?;
        let parts = string_parts(s, Some(self.orig));
        if parts.iter().any(|p| matches!(p, SPart::Interp(_))) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for p in parts {
            if let SPart::Lit(b) = p {
                out.extend_from_slice(&b);
            }
        }
        Ok(Some(out))
    }

    fn lower_string(&mut self, s: &ast::Str) -> Result<Expr> {
        let mut pos = self.pos_of(s.syntax());
        // Nix's `"…"` with interpolations is positioned at its first part (just inside the
        // quote); an indented string `''…''` at its opening quotes.
        let mut elems = s.syntax().children_with_tokens();
        if let Some(open) = elems.next()
            && open.as_token().is_some_and(|t| t.text() == "\"")
            && let Some(first) = elems.next()
            && first.as_token().is_none_or(|t| t.text() != "\"")
        {
            pos = self.pos_off(first.text_range().start());
        }
        self.check_nul(s)?;
        let parts = string_parts(s, Some(self.orig));
        let mut out: Vec<(Pos, Rc<Expr>)> = Vec::new();
        let mut all_lit = true;
        for p in &parts {
            if matches!(p, SPart::Interp(_)) {
                all_lit = false;
            }
        }
        if all_lit {
            let mut b = Vec::new();
            for p in parts {
                if let SPart::Lit(x) = p {
                    b.extend_from_slice(&x);
                }
            }
            return Ok(Expr::Const(Value::String(Rc::new(NixString::new(b)))));
        }
        for p in parts {
            match p {
                SPart::Lit(b) => out.push((pos, Rc::new(Expr::Const(Value::string(b))))),
                SPart::Interp(i) => {
                    let ipos = self.pos_of(i.syntax());
                    let e = i.expr().ok_or_else(|| self.syntax_err(i.syntax()))?;
                    out.push((ipos, self.lower(&e)?));
                }
            }
        }
        Ok(Expr::Concat {
            parts: out.into_boxed_slice(),
            pos,
            force_string: true,
        })
    }

    fn lower_path(&mut self, e: &ast::Expr, pos: Pos) -> Result<Expr> {
        let path_token = |k: SyntaxKind| {
            matches!(
                k,
                SyntaxKind::TOKEN_PATH_ABS
                    | SyntaxKind::TOKEN_PATH_REL
                    | SyntaxKind::TOKEN_PATH_HOME
            )
        };
        if e.syntax()
            .children_with_tokens()
            .any(|c| c.as_token().is_some_and(|t| !path_token(t.kind())))
        {
            let root = e
                .syntax()
                .ancestors()
                .last()
                .expect("a node has a root ancestor");
            if let Some(err) = broken_path(self.ctx.file, &root) {
                return Err(err);
            }
        }
        let parts = match e {
            ast::Expr::PathAbs(p) => p.parts(),
            ast::Expr::PathRel(p) => p.parts(),
            ast::Expr::PathHome(p) => p.parts(),
            _ => unreachable!("only called for paths"),
        };
        let is_home = matches!(e, ast::Expr::PathHome(_));
        let is_rel = matches!(e, ast::Expr::PathRel(_));
        let mut out: Vec<(Pos, Rc<Expr>)> = Vec::new();
        let mut first = true;
        for p in parts {
            match p {
                InterpolPart::Literal(c) => {
                    let mut t =
                        String::from_utf8_lossy(&source::unmap_bytes(c.text())).into_owned();
                    if first {
                        if is_home {
                            if self.ctx.pure {
                                return Err(EvalError::new(
                                    ErrorKind::Parse,
                                    format!(
                                        "the path '{}' can not be resolved in pure mode",
                                        e.syntax().text()
                                    ),
                                ));
                            }
                            let home = self.ctx.home.clone().unwrap_or_default();
                            t = format!("{}{}", home, &t[1..]);
                        } else if is_rel {
                            t = format!("{}/{}", self.ctx.base_dir.trim_end_matches('/'), t);
                        }
                    }
                    out.push((pos, Rc::new(Expr::Const(Value::str(&t)))));
                }
                InterpolPart::Interpolation(i) => {
                    let ipos = self.pos_of(i.syntax());
                    let e = i.expr().ok_or_else(|| self.syntax_err(i.syntax()))?;
                    out.push((ipos, self.lower(&e)?));
                }
            }
            first = false;
        }
        if out.len() == 1
            && let Expr::Const(Value::String(s)) = &*out[0].1
        {
            let p = canon_path(&s.as_str_lossy());
            return Ok(Expr::Const(Value::path(&p)));
        }
        // The first part becomes a path value; the rest are appended as strings.
        if let Expr::Const(Value::String(s)) = &*out[0].1 {
            let p = s.as_str_lossy().into_owned();
            out[0].1 = Rc::new(Expr::Const(Value::path(&p)));
        }
        Ok(Expr::PathConcat {
            parts: out.into_boxed_slice(),
            pos,
        })
    }
}

/// Lexically canonicalises an absolute path (`.`/`..`/duplicate slashes removed).
pub fn canon_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for c in out {
            s.push('/');
            s.push_str(c);
        }
        s
    }
}

/// The interned name of an identifier: straight from its token's text (an identifier is one
/// token; going through the node's `SyntaxText` formatted it piece by piece into a `String`).
fn ident_sym(i: &ast::Ident) -> Symbol {
    match i.ident_token() {
        Some(t) => Symbol::intern(t.text()),
        None => Symbol::intern(&i.syntax().text().to_string()),
    }
}

enum SPart {
    Lit(Vec<u8>),
    Interp(ast::Interpol),
}

/// Nix's view of a string literal: escapes applied, CR/CRLF normalised (normal strings only),
/// indentation stripped (indented strings), non-UTF-8 bytes restored.
fn string_parts(s: &ast::Str, orig: Option<&str>) -> Vec<SPart> {
    let indented = s
        .syntax()
        .children_with_tokens()
        .next()
        .and_then(|t| t.into_token())
        .is_some_and(|t| t.text() == "''");
    if !indented {
        let mut out = Vec::new();
        for p in s.parts() {
            match p {
                InterpolPart::Literal(c) => {
                    out.push(SPart::Lit(unescape_normal(c.syntax().text())))
                }
                InterpolPart::Interpolation(i) => out.push(SPart::Interp(i)),
            }
        }
        return merge_lits(out);
    }
    // Indented string: split into Nix's IND_STR tokens, then strip indentation.
    enum Tok {
        Text(Vec<u8>, bool),
        Interp(ast::Interpol),
    }
    let mut toks: Vec<Tok> = Vec::new();
    let mut first = true;
    for p in s.parts() {
        match p {
            InterpolPart::Literal(c) => {
                let r = c.syntax().text_range();
                let text = orig
                    .and_then(|o| o.get(usize::from(r.start())..usize::from(r.end())))
                    .unwrap_or(c.syntax().text());
                let raw = source::unmap_bytes(text);
                let mut raw: &[u8] = &raw;
                if first {
                    // The lexer eats `''` followed by spaces and a newline.
                    let sp = raw.iter().take_while(|b| **b == b' ').count();
                    if raw.get(sp) == Some(&b'\n') {
                        raw = &raw[sp + 1..];
                    }
                }
                ind_tokens(raw, &mut |b, ind| toks.push(Tok::Text(b, ind)));
            }
            InterpolPart::Interpolation(i) => toks.push(Tok::Interp(i)),
        }
        first = false;
    }
    // Minimum indentation.
    let mut at_start = true;
    let mut min_indent = usize::MAX;
    let mut cur = 0usize;
    for t in &toks {
        match t {
            Tok::Text(b, true) => {
                for &c in b {
                    if at_start {
                        if c == b' ' {
                            cur += 1;
                        } else if c == b'\n' {
                            cur = 0;
                        } else {
                            at_start = false;
                            min_indent = min_indent.min(cur);
                        }
                    } else if c == b'\n' {
                        at_start = true;
                        cur = 0;
                    }
                }
            }
            _ => {
                if at_start {
                    at_start = false;
                    min_indent = min_indent.min(cur);
                }
            }
        }
    }
    if min_indent == usize::MAX {
        min_indent = 1000000;
    }
    // Strip.
    let mut out = Vec::new();
    at_start = true;
    let mut dropped = 0usize;
    let n = toks.len();
    for (idx, t) in toks.into_iter().enumerate() {
        match t {
            Tok::Interp(i) => {
                at_start = false;
                dropped = 0;
                out.push(SPart::Interp(i));
            }
            Tok::Text(b, _) => {
                let mut s2 = Vec::with_capacity(b.len());
                for c in b {
                    if at_start {
                        if c == b' ' {
                            if dropped >= min_indent {
                                s2.push(c);
                            }
                            dropped += 1;
                        } else if c == b'\n' {
                            dropped = 0;
                            s2.push(c);
                        } else {
                            at_start = false;
                            dropped = 0;
                            s2.push(c);
                        }
                    } else {
                        s2.push(c);
                        if c == b'\n' {
                            at_start = true;
                        }
                    }
                }
                if idx == n - 1
                    && let Some(p) = s2.iter().rposition(|c| *c == b'\n')
                    && s2[p + 1..].iter().all(|c| *c == b' ')
                {
                    s2.truncate(p + 1);
                }
                if !s2.is_empty() {
                    out.push(SPart::Lit(s2));
                }
            }
        }
    }
    merge_lits(out)
}

fn merge_lits(parts: Vec<SPart>) -> Vec<SPart> {
    let mut out: Vec<SPart> = Vec::new();
    for p in parts {
        match (out.last_mut(), p) {
            (Some(SPart::Lit(a)), SPart::Lit(b)) => a.extend_from_slice(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

/// Splits raw indented-string content into Nix lexer tokens: (bytes, has_indentation).
fn ind_tokens(raw: &[u8], emit: &mut dyn FnMut(Vec<u8>, bool)) {
    let mut i = 0;
    let mut run: Vec<u8> = Vec::new();
    let flush = |run: &mut Vec<u8>, emit: &mut dyn FnMut(Vec<u8>, bool)| {
        if !run.is_empty() {
            emit(std::mem::take(run), true);
        }
    };
    while i < raw.len() {
        let c = raw[i];
        let next = raw.get(i + 1).copied();
        if c == b'\'' && next == Some(b'\'') {
            // An escape: ''$, ''', ''\X
            match raw.get(i + 2) {
                Some(b'$') => {
                    flush(&mut run, emit);
                    emit(b"$".to_vec(), false);
                    i += 3;
                }
                Some(b'\'') => {
                    flush(&mut run, emit);
                    emit(b"''".to_vec(), false);
                    i += 3;
                }
                Some(b'\\') => {
                    flush(&mut run, emit);
                    match raw.get(i + 3) {
                        Some(&x) => {
                            let v = match x {
                                b'n' => vec![b'\n'],
                                b'r' => vec![b'\r'],
                                b't' => vec![b'\t'],
                                b'\r' => {
                                    if raw.get(i + 4) == Some(&b'\n') {
                                        i += 1;
                                    }
                                    vec![b'\n']
                                }
                                x => vec![x],
                            };
                            emit(v, false);
                            i += 4;
                        }
                        None => i += 3,
                    }
                }
                _ => {
                    // Cannot happen inside content (it would close the string); keep as text.
                    run.push(c);
                    i += 1;
                }
            }
        } else if c == b'$' {
            match next {
                Some(b'{') | None | Some(b'\'') => {
                    flush(&mut run, emit);
                    emit(b"$".to_vec(), false);
                    i += 1;
                }
                Some(n) => {
                    run.push(c);
                    run.push(n);
                    i += 2;
                }
            }
        } else if c == b'\'' {
            match next {
                Some(b'$') | None => {
                    flush(&mut run, emit);
                    emit(b"'".to_vec(), false);
                    i += 1;
                }
                Some(n) => {
                    run.push(c);
                    run.push(n);
                    i += 2;
                }
            }
        } else {
            run.push(c);
            i += 1;
        }
    }
    flush(&mut run, emit);
}

/// Escapes of a `"…"` string segment; CR and CRLF become LF.
fn unescape_normal(raw: &str) -> Vec<u8> {
    let raw = source::unmap_bytes(raw);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c == b'\\' {
            if let Some(&x) = raw.get(i) {
                i += 1;
                match x {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'\r' => {
                        out.push(b'\n');
                        if raw.get(i) == Some(&b'\n') {
                            i += 1;
                        }
                    }
                    x => out.push(x),
                }
            }
        } else if c == b'\r' {
            out.push(b'\n');
            if raw.get(i) == Some(&b'\n') {
                i += 1;
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(src: &str) -> Vec<u8> {
        let p = rnix::Root::parse(src);
        let e = p.tree().expr().expect("expr");
        let ast::Expr::Str(s) = e else {
            panic!("not a string")
        };
        let parts = string_parts(&s, None);
        let mut out = Vec::new();
        for p in parts {
            match p {
                SPart::Lit(b) => out.extend(b),
                SPart::Interp(_) => out.extend(b"<I>"),
            }
        }
        out
    }

    #[test]
    fn indentation_stripping() {
        assert_eq!(lit("''\n  a\n    b\n  ''"), b"a\n  b\n");
        assert_eq!(lit("''\n  a\n  ${x}\n ''"), b"a\n<I>\n");
        assert_eq!(lit("''  a\n  b''"), b"a\nb");
        assert_eq!(lit("''\n    ''$x '''\n    ''\\n''"), b"$x ''\n\n");
        assert_eq!(lit("''\n  a\n\n  b\n''"), b"a\n\nb\n");
        assert_eq!(lit("''a'b$c''"), b"a'b$c");
        assert_eq!(lit("''\r\n  a''"), b"\r\n  a");
    }

    #[test]
    fn normal_escapes_and_cr() {
        assert_eq!(lit("\"a\\nb\\$c\r\nd\re\""), b"a\nb$c\nd\ne");
    }

    #[test]
    fn canon() {
        assert_eq!(canon_path("/a/./b/../c//d/"), "/a/c/d");
        assert_eq!(canon_path("/.."), "/");
    }
}
