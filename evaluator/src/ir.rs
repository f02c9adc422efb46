//! The lowered intermediate representation.
//!
//! The rnix syntax tree is lowered once per source into this tree, which the thread then keeps
//! across evaluations (`crate::source::lowered`). Invariants: a tree holds no value of an
//! evaluation (constants are literals; base-environment names are slots); every variable is
//! resolved statically to (frame depth, slot) or to a base-environment slot; only
//! names with no lexical binding inside a `with` become dynamic [`Expr::WithVar`] lookups; operator
//! sugar (`-`, `*`, `/`, `<`, …) is already desugared as Nix does.

use std::rc::Rc;

use crate::source::Pos;
use crate::symbol::Symbol;
use crate::value::Value;

/// A lowered expression.
#[derive(Debug)]
pub enum Expr {
    /// A literal or base-environment constant.
    Const(Value),
    /// A name of the base environment (`true`, `builtins`, `map`, …) by its thread-wide slot
    /// (`crate::source::lowered::global_slot`), with its use site. A slot, not a value: each
    /// evaluation has its own builtins, and lowered trees are shared between evaluations.
    Global(u32, Pos),
    /// A lexically bound variable: `depth` frames up, slot `slot`.
    Var {
        depth: u32,
        slot: u32,
        pos: Pos,
    },
    /// A variable looked up in the enclosing `with` frames (depths, innermost first).
    WithVar {
        name: Symbol,
        withs: Box<[(u32, Pos)]>,
        pos: Pos,
    },
    Attrs(Box<AttrsExpr>),
    List(Box<[Rc<Expr>]>),
    Lambda(Rc<LambdaDef>),
    Call {
        f: Rc<Expr>,
        args: Box<[Rc<Expr>]>,
        pos: Pos,
    },
    Select {
        e: Rc<Expr>,
        path: Box<[AttrName]>,
        default: Option<Rc<Expr>>,
        pos: Pos,
    },
    HasAttr {
        e: Rc<Expr>,
        path: Box<[AttrName]>,
        pos: Pos,
    },
    Let {
        attrs: Box<AttrsExpr>,
        body: Rc<Expr>,
    },
    With {
        ns: Rc<Expr>,
        body: Rc<Expr>,
        pos: Pos,
    },
    If {
        cond: Rc<Expr>,
        then: Rc<Expr>,
        else_: Rc<Expr>,
        pos: Pos,
    },
    Assert {
        cond: Rc<Expr>,
        body: Rc<Expr>,
        pos: Pos,
        text: Box<str>,
    },
    Op {
        op: BinOp,
        l: Rc<Expr>,
        r: Rc<Expr>,
        pos: Pos,
    },
    Not {
        e: Rc<Expr>,
        pos: Pos,
    },
    /// String interpolation (`force_string`) or `+` chains (not forced to string).
    Concat {
        parts: Box<[(Pos, Rc<Expr>)]>,
        pos: Pos,
        force_string: bool,
    },
    /// A path with interpolations: first part is the (absolute) prefix.
    PathConcat {
        parts: Box<[(Pos, Rc<Expr>)]>,
        pos: Pos,
    },
    CurPos(Pos),
}

/// Binary operators evaluated natively (the rest are desugared to builtin calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Eq,
    NEq,
    And,
    Or,
    Impl,
    Update,
    ConcatLists,
}

/// One element of an attribute path.
#[derive(Debug)]
pub enum AttrName {
    Static(Symbol),
    Dynamic(Rc<Expr>, Pos),
}

/// Which frame an attribute's value expression is evaluated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// The set's own recursive frame (rec sets, let), or the enclosing frame (plain sets).
    Plain,
    /// `inherit x;`: the enclosing frame.
    Inherited,
    /// `inherit (e) x;`: the frame holding the `inherit (e)` sources.
    InheritedFrom,
}

/// A static attribute definition.
#[derive(Debug)]
pub struct AttrDef {
    pub name: Symbol,
    pub value: Rc<Expr>,
    pub pos: Pos,
    pub kind: AttrKind,
}

/// A dynamic attribute definition (`${e} = v;`).
#[derive(Debug)]
pub struct DynAttrDef {
    pub name: Rc<Expr>,
    pub value: Rc<Expr>,
    pub pos: Pos,
}

/// An attribute set literal (also the bindings of `let`).
///
/// Frames at run time: if `rec`, a frame with one slot per static attribute (in `attrs` order),
/// in which `Plain` values, dynamic attributes and the `inherit (e)` source expressions are
/// evaluated; if `inherit_from` is non-empty, a frame above that holding the sources' values
/// (one slot each), in which `InheritedFrom` values are evaluated.
#[derive(Debug)]
pub struct AttrsExpr {
    pub rec: bool,
    pub attrs: Vec<AttrDef>,
    pub dynamic: Vec<DynAttrDef>,
    pub inherit_from: Vec<Rc<Expr>>,
    pub pos: Pos,
}

/// A formal argument of a lambda pattern.
#[derive(Debug)]
pub struct Formal {
    pub name: Symbol,
    pub default: Option<Rc<Expr>>,
    pub pos: Pos,
}

/// A `{ … }` pattern.
#[derive(Debug)]
pub struct Formals {
    /// Sorted by symbol (Nix's order for reporting missing arguments).
    pub entries: Vec<Formal>,
    pub ellipsis: bool,
}

impl Formals {
    pub fn has(&self, s: Symbol) -> bool {
        self.entries.binary_search_by_key(&s, |f| f.name).is_ok()
    }
}

/// A lambda definition. Frame layout at call time: `[arg?] ++ formals (in `entries` order)`.
#[derive(Debug)]
pub struct LambdaDef {
    pub name: Option<Symbol>,
    pub pos: Pos,
    pub arg: Option<Symbol>,
    pub formals: Option<Formals>,
    pub body: Rc<Expr>,
}

impl Expr {
    pub fn pos(&self) -> Pos {
        match self {
            Expr::Const(_) => Pos::NONE,
            Expr::Global(_, pos) => *pos,
            Expr::Var { pos, .. }
            | Expr::WithVar { pos, .. }
            | Expr::Call { pos, .. }
            | Expr::Select { pos, .. }
            | Expr::With { pos, .. }
            | Expr::If { pos, .. }
            | Expr::Assert { pos, .. }
            | Expr::Op { pos, .. }
            | Expr::Not { pos, .. }
            | Expr::Concat { pos, .. }
            | Expr::PathConcat { pos, .. }
            | Expr::CurPos(pos) => *pos,
            // Nix's ExprOpHasAttr reports its operand's position.
            Expr::HasAttr { e, .. } => e.pos(),
            Expr::Attrs(a) => a.pos,
            Expr::Let { body, .. } => body.pos(),
            Expr::List(_) => Pos::NONE,
            Expr::Lambda(l) => l.pos,
        }
    }
}
