//! The parser: tokens → a tree of [`Node`]s, checked the way Go checks it at parse time (undefined
//! functions and variables, misplaced `else`/`end`, arguments given to non-functions).
//!
//! Nesting (blocks and parentheses together) is capped at [`MAX_DEPTH`], so neither parsing nor
//! rendering can overflow the stack, whatever the input.

use super::lex::{Tok, Token};
use super::{funcs, ParseError};

/// How deep blocks and parenthesised pipelines may nest.
pub const MAX_DEPTH: usize = 100;

#[derive(Clone, Debug)]
pub(crate) enum Node {
    Text(String),
    Action(Pipe),
    If(Branches),
    With(Branches),
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Break(usize),
    Continue(usize),
}

/// `if`/`with` with their `else if`/`else with` chains and final `else`.
#[derive(Clone, Debug)]
pub(crate) struct Branches {
    pub(crate) arms: Vec<(Pipe, Vec<Node>)>,
    pub(crate) otherwise: Vec<Node>,
}

#[derive(Clone, Debug)]
pub(crate) struct Pipe {
    pub(crate) pos: usize,
    /// Declared (`:=`) or assigned (`=`) variables.
    pub(crate) vars: Vec<String>,
    pub(crate) assign: bool,
    pub(crate) cmds: Vec<Cmd>,
}

#[derive(Clone, Debug)]
pub(crate) struct Cmd {
    pub(crate) pos: usize,
    pub(crate) args: Vec<Operand>,
}

#[derive(Clone, Debug)]
pub(crate) enum Operand {
    /// `.A.B`: fields of dot.
    Fields(Vec<String>),
    /// `$x.A.B`.
    Var(String, Vec<String>),
    Dot,
    Nil,
    Bool(bool),
    Str(String),
    Int(i64),
    Float(f64),
    /// A function name.
    Func(String, usize),
    /// `(pipeline).A.B`.
    Paren(Box<Pipe>, Vec<String>),
}

pub(crate) struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    /// Variables in scope, innermost last.
    vars: Vec<String>,
    depth: usize,
    /// How many `range` loops enclose the current position.
    loops: usize,
}

/// How a list of nodes ended.
enum Stop {
    Eof,
    /// `{{end}}`, at its keyword.
    End(usize),
    /// `{{else}}` or `{{else if …}}`, at its keyword.
    Else(usize),
}

impl<'a> Parser<'a> {
    pub(crate) fn new(src: &'a str, toks: Vec<Token>) -> Self {
        Parser {
            src,
            toks,
            i: 0,
            vars: vec!["$".to_string()],
            depth: 0,
            loops: 0,
        }
    }

    pub(crate) fn parse_template(mut self) -> Result<Vec<Node>, ParseError> {
        let (nodes, end) = self.list()?;
        match end {
            Stop::Eof => Ok(nodes),
            Stop::End(pos) => Err(self.err(pos, "unexpected {{end}}")),
            Stop::Else(pos) => Err(self.err(pos, "unexpected {{else}}")),
        }
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        ParseError::at(self.src, pos, msg)
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.i].pos
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    /// The next token that is not a space.
    fn next_non_space(&mut self) -> Token {
        loop {
            let t = self.next();
            if t.tok != Tok::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> &Tok {
        while *self.peek() == Tok::Space {
            self.next();
        }
        self.peek()
    }

    fn enter(&mut self, pos: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(pos, format!("template nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// Nodes up to `{{end}}`, `{{else…}}` or the end of input.
    fn list(&mut self) -> Result<(Vec<Node>, Stop), ParseError> {
        let mut nodes = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Eof => return Ok((nodes, Stop::Eof)),
                Tok::Text(s) => nodes.push(Node::Text(s)),
                Tok::Left => {
                    let kw = match self.peek_non_space() {
                        Tok::Ident(w) => w.clone(),
                        _ => String::new(),
                    };
                    let kw_pos = self.pos();
                    match kw.as_str() {
                        "end" => {
                            self.next();
                            self.expect_right("end")?;
                            return Ok((nodes, Stop::End(kw_pos)));
                        }
                        "else" => {
                            self.next();
                            return Ok((nodes, Stop::Else(kw_pos)));
                        }
                        "if" | "with" | "range" => {
                            self.next();
                            self.enter(kw_pos)?;
                            let node = self.block(&kw, kw_pos)?;
                            self.depth -= 1;
                            nodes.push(node);
                        }
                        "break" | "continue" => {
                            self.next();
                            if self.loops == 0 {
                                return Err(self.err(kw_pos, format!("{{{{{kw}}}}} outside {{{{range}}}}")));
                            }
                            self.expect_right(&kw)?;
                            nodes.push(if kw == "break" {
                                Node::Break(kw_pos)
                            } else {
                                Node::Continue(kw_pos)
                            });
                        }
                        "define" | "template" | "block" => {
                            return Err(self.err(kw_pos, format!("{{{{{kw}}}}} is not supported by concord")))
                        }
                        _ => {
                            let pipe = self.pipeline("command", true)?;
                            nodes.push(Node::Action(pipe));
                        }
                    }
                }
                other => return Err(self.err(t.pos, format!("unexpected {}", describe(&other)))),
            }
        }
    }

    fn expect_right(&mut self, context: &str) -> Result<(), ParseError> {
        let t = self.next_non_space();
        if t.tok != Tok::Right {
            return Err(self.err(t.pos, format!("unexpected {} in {context}", describe(&t.tok))));
        }
        Ok(())
    }

    /// After `{{if`, `{{with` or `{{range`.
    fn block(&mut self, kw: &str, kw_pos: usize) -> Result<Node, ParseError> {
        let scope = self.vars.len();
        let pipe = self.pipeline(kw, true)?;
        if kw == "range" {
            self.check_range_decl(&pipe)?;
            self.loops += 1;
        }
        let (body, mut end) = self.list()?;
        if kw == "range" {
            self.loops -= 1;
        }
        let mut arms = vec![(pipe, body)];
        let mut otherwise = Vec::new();
        loop {
            match end {
                Stop::Eof => return Err(self.err(kw_pos, format!("unexpected EOF: {{{{{kw}}}}} has no {{{{end}}}}"))),
                Stop::End(_) => break,
                Stop::Else(_) => {
                    // `{{else if …}}` / `{{else with …}}` continue the chain inside the same block.
                    let chained = matches!(self.peek_non_space(), Tok::Ident(w) if w == kw && kw != "range");
                    if chained {
                        self.next();
                        let pipe = self.pipeline(kw, true)?;
                        let (body, e) = self.list()?;
                        arms.push((pipe, body));
                        end = e;
                    } else {
                        self.expect_right("else")?;
                        let (body, e) = self.list()?;
                        otherwise = body;
                        match e {
                            Stop::End(_) => break,
                            Stop::Eof => {
                                return Err(self.err(kw_pos, format!("unexpected EOF: {{{{{kw}}}}} has no {{{{end}}}}")))
                            }
                            Stop::Else(pos) => return Err(self.err(pos, "expected end; found {{else}}")),
                        }
                    }
                }
            }
        }
        self.vars.truncate(scope);
        Ok(match kw {
            "if" => Node::If(Branches { arms, otherwise }),
            "with" => Node::With(Branches { arms, otherwise }),
            _ => {
                let (pipe, body) = arms.pop().expect("range has exactly one arm");
                Node::Range { pipe, body, otherwise }
            }
        })
    }

    fn check_range_decl(&self, pipe: &Pipe) -> Result<(), ParseError> {
        if pipe.vars.len() > 2 {
            return Err(self.err(pipe.pos, "too many declarations in range"));
        }
        Ok(())
    }

    /// A pipeline up to the closing delimiter (or `)` when `in_parens`).
    fn pipeline(&mut self, context: &str, allow_decl: bool) -> Result<Pipe, ParseError> {
        self.pipeline_until(context, allow_decl, false)
    }

    fn pipeline_until(&mut self, context: &str, allow_decl: bool, in_parens: bool) -> Result<Pipe, ParseError> {
        let pos = {
            self.peek_non_space();
            self.pos()
        };
        let mut pipe = Pipe {
            pos,
            vars: Vec::new(),
            assign: false,
            cmds: Vec::new(),
        };
        if allow_decl {
            self.declarations(&mut pipe, context)?;
        }
        loop {
            let tok = self.peek_non_space().clone();
            let tpos = self.pos();
            match tok {
                Tok::Right if !in_parens => {
                    self.next();
                    break;
                }
                Tok::RParen if in_parens => {
                    self.next();
                    break;
                }
                Tok::Right | Tok::RParen | Tok::Eof => {
                    return Err(self.err(tpos, format!("unexpected {} in {context}", describe(&tok))))
                }
                _ => {
                    let cmd = self.command(context, in_parens)?;
                    pipe.cmds.push(cmd);
                    if *self.peek_non_space() == Tok::Pipe {
                        self.next();
                        if matches!(self.peek_non_space(), Tok::Right | Tok::RParen) {
                            return Err(self.err(self.pos(), "missing command after |"));
                        }
                    }
                }
            }
        }
        if pipe.cmds.is_empty() {
            return Err(self.err(pos, format!("missing value for {context}")));
        }
        for cmd in pipe.cmds.iter().skip(1) {
            if !matches!(
                &cmd.args[0],
                Operand::Func(..) | Operand::Fields(_) | Operand::Var(_, _)
            ) {
                return Err(self.err(cmd.pos, "non executable command in pipeline stage"));
            }
        }
        // Declarations take effect after the pipeline, like Go.
        if !pipe.assign {
            self.vars.extend(pipe.vars.iter().cloned());
        }
        Ok(pipe)
    }

    /// `$x :=`, `$x =`, `$i, $e :=`.
    fn declarations(&mut self, pipe: &mut Pipe, context: &str) -> Result<(), ParseError> {
        let start = self.i;
        let mut names = Vec::new();
        while let Tok::Var(name) = self.peek_non_space().clone() {
            let vpos = self.pos();
            self.next();
            names.push((name, vpos));
            match self.peek_non_space().clone() {
                Tok::Declare | Tok::Assign => {
                    let assign = *self.peek() == Tok::Assign;
                    self.next();
                    if assign {
                        for (n, p) in &names {
                            if !self.vars.contains(n) {
                                return Err(self.err(*p, format!("undefined variable {n:?}")));
                            }
                        }
                    }
                    if names.len() > 1 && context != "range" {
                        return Err(self.err(vpos, format!("too many declarations in {context}")));
                    }
                    pipe.assign = assign;
                    pipe.vars = names.into_iter().map(|(n, _)| n).collect();
                    return Ok(());
                }
                Tok::Comma if context == "range" && names.len() == 1 => {
                    self.next();
                }
                _ => break,
            }
        }
        self.i = start;
        Ok(())
    }

    fn command(&mut self, context: &str, in_parens: bool) -> Result<Cmd, ParseError> {
        let pos = {
            self.peek_non_space();
            self.pos()
        };
        let mut args = Vec::new();
        loop {
            match self.peek_non_space().clone() {
                Tok::Right if !in_parens => break,
                Tok::RParen if in_parens => break,
                Tok::Pipe => break,
                _ => {}
            }
            let operand = self.operand(context)?;
            args.push(operand);
            match self.peek().clone() {
                Tok::Space => {}
                Tok::Right | Tok::Pipe => {}
                Tok::RParen if in_parens => {}
                other => return Err(self.err(self.pos(), format!("unexpected {} in operand", describe(&other)))),
            }
        }
        if args.is_empty() {
            return Err(self.err(pos, format!("missing value for {context}")));
        }
        let method_like =
            matches!(&args[0], Operand::Fields(_)) || matches!(&args[0], Operand::Var(_, f) if !f.is_empty());
        if args.len() > 1 && !matches!(args[0], Operand::Func(..)) && !method_like {
            return Err(self.err(
                pos,
                format!("can't give argument to non-function {}", operand_text(&args[0])),
            ));
        }
        Ok(Cmd { pos, args })
    }

    /// One operand with its field chain.
    fn operand(&mut self, context: &str) -> Result<Operand, ParseError> {
        let t = self.next_non_space();
        let op = match t.tok {
            Tok::Field(f) => {
                let mut fields = vec![f];
                fields.extend(self.chain());
                return Ok(Operand::Fields(fields));
            }
            Tok::Var(name) => {
                if !self.vars.contains(&name) {
                    return Err(self.err(t.pos, format!("undefined variable {name:?}")));
                }
                let fields = self.chain();
                return Ok(Operand::Var(name, fields));
            }
            Tok::Dot => Operand::Dot,
            Tok::Nil => Operand::Nil,
            Tok::Bool(b) => Operand::Bool(b),
            Tok::Str(s) => Operand::Str(s),
            Tok::Int(i) => Operand::Int(i),
            Tok::Float(f) => Operand::Float(f),
            Tok::Ident(name) => {
                if !funcs::is_defined(&name) {
                    return Err(self.err(t.pos, format!("function {name:?} not defined")));
                }
                Operand::Func(name, t.pos)
            }
            Tok::LParen => {
                self.enter(t.pos)?;
                let pipe = self.pipeline_until("parenthesized pipeline", false, true)?;
                self.depth -= 1;
                let fields = self.chain();
                return Ok(Operand::Paren(Box::new(pipe), fields));
            }
            other => {
                return Err(self.err(
                    t.pos,
                    format!("unexpected {} in {}", describe(&other), op_context(context)),
                ))
            }
        };
        if let Tok::Field(f) = self.peek() {
            return Err(self.err(self.pos(), format!("unexpected .{f} after {}", operand_text(&op))));
        }
        Ok(op)
    }

    /// `.A.B` directly after an operand.
    fn chain(&mut self) -> Vec<String> {
        let mut fields = Vec::new();
        while let Tok::Field(f) = self.peek().clone() {
            self.next();
            fields.push(f);
        }
        fields
    }
}

fn op_context(context: &str) -> &str {
    if context == "command" {
        "operand"
    } else {
        context
    }
}

fn operand_text(op: &Operand) -> String {
    match op {
        Operand::Fields(f) => format!(".{}", f.join(".")),
        Operand::Var(v, f) if f.is_empty() => v.clone(),
        Operand::Var(v, f) => format!("{v}.{}", f.join(".")),
        Operand::Dot => ".".into(),
        Operand::Nil => "nil".into(),
        Operand::Bool(b) => b.to_string(),
        Operand::Str(s) => format!("{s:?}"),
        Operand::Int(i) => i.to_string(),
        Operand::Float(f) => f.to_string(),
        Operand::Func(n, _) => n.clone(),
        Operand::Paren(..) => "(pipeline)".into(),
    }
}

/// A token as Go's parser names it in errors.
fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Text(_) => "text".into(),
        Tok::Left => "\"{{\"".into(),
        Tok::Right => "\"}}\"".into(),
        Tok::Space => "space".into(),
        Tok::Ident(s) => format!("<{s}>"),
        Tok::Field(f) => format!("<.{f}>"),
        Tok::Var(v) => format!("<{v}>"),
        Tok::Dot => "<.>".into(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Int(i) => format!("<{i}>"),
        Tok::Float(f) => format!("<{f}>"),
        Tok::Bool(b) => format!("<{b}>"),
        Tok::Nil => "<nil>".into(),
        Tok::Pipe => "\"|\"".into(),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Declare => "\":=\"".into(),
        Tok::Assign => "\"=\"".into(),
        Tok::Char(c) => format!("{:?}", c.to_string()),
        Tok::Eof => "EOF".into(),
    }
}
