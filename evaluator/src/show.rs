//! Nix's `Expr::show`: the canonical text of an expression, used in assertion messages.
//!
//! Invariant: output follows Nix 2.26's `show` methods (parenthesisation, operator desugaring,
//! sorted bindings), computed from the rnix tree.

use rnix::ast::{self, AstToken, HasEntry};
use rowan::ast::AstNode;

use crate::print::{fmt_float, literal_string};

thread_local! {
    static BASE_DIR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Shows `e`, resolving relative path literals against `base_dir` as Nix's parser does.
pub fn show_in(e: &ast::Expr, base_dir: &str) -> String {
    BASE_DIR.with(|b| *b.borrow_mut() = base_dir.to_string());
    show(e)
}

pub fn show(e: &ast::Expr) -> String {
    let mut s = String::new();
    go(e, &mut s);
    s
}

/// The name of a string without interpolations (None if it interpolates).
fn plain_string(s: &ast::Str) -> Option<String> {
    let mut name = String::new();
    for p in s.normalized_parts() {
        match p {
            ast::InterpolPart::Literal(l) => name.push_str(&l),
            ast::InterpolPart::Interpolation(_) => return None,
        }
    }
    Some(name)
}

/// The shown name of a static attribute: an identifier, a string without interpolations, or
/// (as Nix's parser turns it into a static name) `${"…"}` of such a string.
fn static_attr(a: &ast::Attr) -> Option<String> {
    match a {
        ast::Attr::Ident(i) => Some(i.syntax().text().to_string()),
        ast::Attr::Str(s) => plain_string(s).map(|n| crate::print::attr_name_string(n.as_bytes())),
        ast::Attr::Dynamic(d) => {
            let mut e = d.expr()?;
            while let ast::Expr::Paren(p) = &e {
                e = p.expr()?;
            }
            match &e {
                ast::Expr::Str(s) => {
                    plain_string(s).map(|n| crate::print::attr_name_string(n.as_bytes()))
                }
                _ => None,
            }
        }
    }
}

fn attr_text(a: &ast::Attr) -> String {
    if let Some(n) = static_attr(a) {
        return n;
    }
    match a {
        ast::Attr::Str(s) => format!("\"${{{}}}\"", show(&ast::Expr::Str(s.clone()))),
        ast::Attr::Dynamic(d) => match d.expr() {
            Some(e) => format!("\"${{{}}}\"", show(&e)),
            None => String::new(),
        },
        ast::Attr::Ident(_) => String::new(),
    }
}

fn attrpath(p: Option<ast::Attrpath>) -> String {
    p.map(|p| {
        p.attrs()
            .map(|a| attr_text(&a))
            .collect::<Vec<_>>()
            .join(".")
    })
    .unwrap_or_default()
}

fn bindings(n: &impl HasEntry, out: &mut String) {
    let mut plain: Vec<(String, String)> = Vec::new();
    let mut dynamic: Vec<(String, String)> = Vec::new();
    let mut inherits: Vec<String> = Vec::new();
    let mut froms: Vec<(String, Vec<String>)> = Vec::new();
    for e in n.entries() {
        match e {
            ast::Entry::Inherit(i) => {
                let names: Vec<String> = i.attrs().map(|a| attr_text(&a)).collect();
                match i.from().and_then(|f| f.expr()) {
                    Some(f) => {
                        let mut ns = names;
                        ns.sort();
                        froms.push((show(&f), ns))
                    }
                    None => inherits.extend(names),
                }
            }
            ast::Entry::AttrpathValue(av) => {
                let v = av.value().map(|v| show(&v)).unwrap_or_default();
                // Dynamic attributes are shown after the static ones, in source order.
                let is_dynamic = av
                    .attrpath()
                    .and_then(|p| p.attrs().next())
                    .is_some_and(|a| static_attr(&a).is_none());
                if is_dynamic {
                    dynamic.push((attrpath(av.attrpath()), v));
                } else {
                    plain.push((attrpath(av.attrpath()), v));
                }
            }
        }
    }
    inherits.sort();
    plain.sort();
    if !inherits.is_empty() {
        out.push_str("inherit");
        for i in inherits {
            out.push(' ');
            out.push_str(&i);
        }
        out.push_str("; ");
    }
    for (f, ns) in froms {
        out.push_str(&format!("inherit ({f})"));
        for n in ns {
            out.push(' ');
            out.push_str(&n);
        }
        out.push_str("; ");
    }
    for (k, v) in plain.into_iter().chain(dynamic) {
        out.push_str(&format!("{k} = {v}; "));
    }
}

fn go(e: &ast::Expr, out: &mut String) {
    match e {
        ast::Expr::Paren(p) => {
            if let Some(i) = p.expr() {
                go(&i, out)
            }
        }
        ast::Expr::Root(r) => {
            if let Some(i) = r.expr() {
                go(&i, out)
            }
        }
        ast::Expr::Literal(l) => match l.kind() {
            ast::LiteralKind::Integer(i) => out.push_str(i.syntax().text()),
            ast::LiteralKind::Float(f) => out.push_str(&fmt_float(f.value().unwrap_or(0.0))),
            ast::LiteralKind::Uri(u) => out.push_str(&literal_string(u.syntax().text().as_bytes())),
        },
        ast::Expr::Ident(i) => out.push_str(&i.syntax().text().to_string()),
        ast::Expr::Str(s) => {
            let mut parts = Vec::new();
            let mut has_interp = false;
            for p in s.normalized_parts() {
                match p {
                    ast::InterpolPart::Literal(l) => parts.push(literal_string(l.as_bytes())),
                    ast::InterpolPart::Interpolation(i) => {
                        has_interp = true;
                        parts.push(i.expr().map(|e| show(&e)).unwrap_or_default())
                    }
                }
            }
            if has_interp {
                out.push('(');
                out.push_str(&parts.join(" + "));
                out.push(')');
            } else {
                out.push_str(&parts.concat());
                if parts.is_empty() {
                    out.push_str("\"\"");
                }
            }
        }
        ast::Expr::PathAbs(_) | ast::Expr::PathHome(_) => {
            out.push_str(&crate::lower::canon_path(&e.syntax().text().to_string()))
        }
        ast::Expr::PathRel(_) => {
            let base = BASE_DIR.with(|b| b.borrow().clone());
            out.push_str(&crate::lower::canon_path(&format!(
                "{}/{}",
                base,
                e.syntax().text()
            )))
        }
        ast::Expr::PathSearch(p) => {
            let t = p.syntax().text().to_string();
            let name = t.trim_start_matches('<').trim_end_matches('>');
            out.push_str(&format!(
                "(__findFile __nixPath {})",
                literal_string(name.as_bytes())
            ));
        }
        ast::Expr::Select(s) => {
            out.push('(');
            if let Some(i) = s.expr() {
                go(&i, out);
            }
            out.push_str(").");
            out.push_str(&attrpath(s.attrpath()));
            if let Some(d) = s.default_expr() {
                out.push_str(" or (");
                go(&d, out);
                out.push(')');
            }
        }
        ast::Expr::HasAttr(h) => {
            out.push_str("((");
            if let Some(i) = h.expr() {
                go(&i, out);
            }
            out.push_str(") ? ");
            out.push_str(&attrpath(h.attrpath()));
            out.push(')');
        }
        ast::Expr::AttrSet(a) => {
            if a.rec_token().is_some() {
                out.push_str("rec ");
            }
            out.push_str("{ ");
            bindings(a, out);
            out.push('}');
        }
        ast::Expr::List(l) => {
            out.push_str("[ ");
            for i in l.items() {
                out.push('(');
                go(&i, out);
                out.push_str(") ");
            }
            out.push(']');
        }
        ast::Expr::Lambda(l) => {
            out.push('(');
            match l.param() {
                Some(ast::Param::IdentParam(i)) => {
                    out.push_str(&i.syntax().text().to_string());
                }
                Some(ast::Param::Pattern(p)) => {
                    out.push_str("{ ");
                    let mut fs: Vec<(String, Option<String>)> = p
                        .pat_entries()
                        .map(|pe| {
                            (
                                pe.ident()
                                    .map(|i| i.syntax().text().to_string())
                                    .unwrap_or_default(),
                                pe.default().map(|d| show(&d)),
                            )
                        })
                        .collect();
                    fs.sort();
                    let mut first = true;
                    for (n, d) in fs {
                        if !first {
                            out.push_str(", ");
                        }
                        first = false;
                        out.push_str(&n);
                        if let Some(d) = d {
                            out.push_str(" ? ");
                            out.push_str(&d);
                        }
                    }
                    if p.ellipsis_token().is_some() {
                        if !first {
                            out.push_str(", ");
                        }
                        out.push_str("...");
                    }
                    out.push_str(" }");
                    if let Some(b) = p.pat_bind().and_then(|b| b.ident()) {
                        out.push_str(" @ ");
                        out.push_str(&b.syntax().text().to_string());
                    }
                }
                None => {}
            }
            out.push_str(": ");
            if let Some(b) = l.body() {
                go(&b, out);
            }
            out.push(')');
        }
        ast::Expr::Apply(_) => {
            let mut args = Vec::new();
            let mut cur = e.clone();
            while let ast::Expr::Apply(a) = &cur {
                if let Some(x) = a.argument() {
                    args.push(x);
                }
                match a.lambda() {
                    Some(f) => cur = f,
                    None => break,
                }
            }
            out.push('(');
            go(&cur, out);
            for a in args.iter().rev() {
                out.push(' ');
                go(a, out);
            }
            out.push(')');
        }
        ast::Expr::LetIn(l) => {
            out.push_str("(let ");
            bindings(l, out);
            out.push_str("in ");
            if let Some(b) = l.body() {
                go(&b, out);
            }
            out.push(')');
        }
        ast::Expr::LegacyLet(l) => {
            out.push_str("(rec { ");
            bindings(l, out);
            out.push_str("}).body");
        }
        ast::Expr::With(w) => {
            out.push_str("(with ");
            if let Some(n) = w.namespace() {
                go(&n, out);
            }
            out.push_str("; ");
            if let Some(b) = w.body() {
                go(&b, out);
            }
            out.push(')');
        }
        ast::Expr::IfElse(i) => {
            out.push_str("(if ");
            if let Some(c) = i.condition() {
                go(&c, out);
            }
            out.push_str(" then ");
            if let Some(c) = i.body() {
                go(&c, out);
            }
            out.push_str(" else ");
            if let Some(c) = i.else_body() {
                go(&c, out);
            }
            out.push(')');
        }
        ast::Expr::Assert(a) => {
            out.push_str("assert ");
            if let Some(c) = a.condition() {
                go(&c, out);
            }
            out.push_str("; ");
            if let Some(c) = a.body() {
                go(&c, out);
            }
        }
        ast::Expr::UnaryOp(u) => {
            let inner = u.expr().map(|e| show(&e)).unwrap_or_default();
            match u.operator() {
                Some(ast::UnaryOpKind::Invert) => out.push_str(&format!("(! {inner})")),
                _ => out.push_str(&format!("(__sub 0 {inner})")),
            }
        }
        ast::Expr::BinOp(b) => {
            let l = b.lhs().map(|e| show(&e)).unwrap_or_default();
            let r = b.rhs().map(|e| show(&e)).unwrap_or_default();
            use ast::BinOpKind as K;
            let s = match b.operator() {
                Some(K::Add) => format!("({l} + {r})"),
                Some(K::Sub) => format!("(__sub {l} {r})"),
                Some(K::Mul) => format!("(__mul {l} {r})"),
                Some(K::Div) => format!("(__div {l} {r})"),
                Some(K::Less) => format!("(__lessThan {l} {r})"),
                Some(K::More) => format!("(__lessThan {r} {l})"),
                Some(K::LessOrEq) => format!("(! (__lessThan {r} {l}))"),
                Some(K::MoreOrEq) => format!("(! (__lessThan {l} {r}))"),
                Some(K::Concat) => format!("({l} ++ {r})"),
                Some(K::Update) => format!("({l} // {r})"),
                Some(K::And) => format!("({l} && {r})"),
                Some(K::Or) => format!("({l} || {r})"),
                Some(K::Implication) => format!("({l} -> {r})"),
                Some(K::Equal) => format!("({l} == {r})"),
                Some(K::NotEqual) => format!("({l} != {r})"),
                Some(K::PipeRight) => format!("({l} |> {r})"),
                Some(K::PipeLeft) => format!("({l} <| {r})"),
                None => String::new(),
            };
            out.push_str(&s);
        }
        ast::Expr::CurPos(_) => out.push_str("__curPos"),
        ast::Expr::Error(_) => {}
    }
}
