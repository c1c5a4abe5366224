//! The evaluator: walks the tree with Go's semantics (truth, scoping of variables, pipelines passing
//! the previous result as the last argument, `range` over lists and sorted maps).

use super::dep::Dependency;
use super::parse::{Branches, Cmd, Node, Operand, Pipe};
use super::value::Value;
use super::{funcs, line_col, RenderContext, RenderError, Rendered, Template, MAX_OUTPUT, MAX_STEPS};
use std::collections::BTreeSet;

/// An execution error at a byte offset of the source.
pub(crate) struct Fail {
    pub(crate) pos: usize,
    pub(crate) msg: String,
}

enum Flow {
    Normal,
    Break,
    Continue,
}

pub(crate) struct Exec<'a> {
    pub(crate) ctx: &'a RenderContext<'a>,
    vars: Vec<(String, Value)>,
    out: String,
    pub(crate) used: BTreeSet<Dependency>,
    pub(crate) missing: BTreeSet<Dependency>,
    steps: u64,
}

pub(crate) fn render(t: &Template, ctx: &RenderContext<'_>, root: &Value) -> Result<Rendered, RenderError> {
    let mut ex = Exec {
        ctx,
        vars: vec![("$".to_string(), root.clone())],
        out: String::new(),
        used: BTreeSet::new(),
        missing: BTreeSet::new(),
        steps: 0,
    };
    let result = ex.walk(&t.nodes, root);
    match result {
        Err(fail) if ex.missing.is_empty() => {
            let (line, col) = line_col(&t.src, fail.pos);
            Err(RenderError {
                line,
                col,
                msg: fail.msg,
            })
        }
        _ => Ok(Rendered {
            output: ex.out,
            used: ex.used,
            missing: ex.missing,
        }),
    }
}

impl<'a> Exec<'a> {
    /// Look up a dependency's data, recording the dependency as used (and missing when it has none).
    pub(crate) fn dependency(&mut self, dep: Dependency) -> Option<Value> {
        let value = self.ctx.data.get(&dep).cloned();
        if value.is_none() {
            self.missing.insert(dep.clone());
        }
        self.used.insert(dep);
        value
    }

    /// Mark a dependency missing even though it has data (`key` of an absent key, `safeLs` of nothing).
    pub(crate) fn block_on(&mut self, dep: Dependency) {
        self.missing.insert(dep);
    }

    fn step(&mut self, pos: usize) -> Result<(), Fail> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(Fail {
                pos,
                msg: format!("template exceeded {MAX_STEPS} evaluation steps"),
            });
        }
        Ok(())
    }

    fn write(&mut self, pos: usize, s: &str) -> Result<(), Fail> {
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err(Fail {
                pos,
                msg: format!("output exceeds {MAX_OUTPUT} bytes"),
            });
        }
        self.out.push_str(s);
        Ok(())
    }

    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, Fail> {
        for node in nodes {
            let flow = match node {
                Node::Text(text) => {
                    self.step(0)?;
                    self.write(0, text)?;
                    Flow::Normal
                }
                Node::Action(pipe) => {
                    self.step(pipe.pos)?;
                    let v = self.pipe(pipe, dot)?;
                    if pipe.vars.is_empty() {
                        let text = v.to_text();
                        self.write(pipe.pos, &text)?;
                    }
                    Flow::Normal
                }
                Node::If(b) => self.branches(b, dot, false)?,
                Node::With(b) => self.branches(b, dot, true)?,
                Node::Range { pipe, body, otherwise } => self.range(pipe, body, otherwise, dot)?,
                Node::Break(pos) => {
                    self.step(*pos)?;
                    Flow::Break
                }
                Node::Continue(pos) => {
                    self.step(*pos)?;
                    Flow::Continue
                }
            };
            if !matches!(flow, Flow::Normal) {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn branches(&mut self, b: &Branches, dot: &Value, with: bool) -> Result<Flow, Fail> {
        let scope = self.vars.len();
        let mut result = None;
        for (pipe, body) in &b.arms {
            self.step(pipe.pos)?;
            let v = self.pipe(pipe, dot)?;
            if v.truthy() {
                let inner = if with { v } else { dot.clone() };
                result = Some(self.walk(body, &inner));
                break;
            }
        }
        let result = match result {
            Some(r) => r,
            None => self.walk(&b.otherwise, dot),
        };
        self.vars.truncate(scope);
        result
    }

    fn range(&mut self, pipe: &Pipe, body: &[Node], otherwise: &[Node], dot: &Value) -> Result<Flow, Fail> {
        self.step(pipe.pos)?;
        let scope = self.vars.len();
        let v = self.pipe_value(pipe, dot)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::Null => Vec::new(),
            Value::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, e)| (Value::Int(i as i64), e.clone()))
                .collect(),
            Value::Map(m) => m.iter().map(|(k, e)| (Value::Str(k.clone()), e.clone())).collect(),
            Value::Int(n) => (0..*n).map(|i| (Value::Int(i), Value::Int(i))).collect(),
            other => {
                return Err(Fail {
                    pos: pipe.pos,
                    msg: format!("range can't iterate over {}", other.to_text()),
                })
            }
        };
        if items.is_empty() {
            let flow = self.walk(otherwise, dot);
            self.vars.truncate(scope);
            return flow.map(|_| Flow::Normal);
        }
        for (key, elem) in items {
            self.step(pipe.pos)?;
            match pipe.vars.as_slice() {
                [] => {}
                [e] => self.vars.push((e.clone(), elem.clone())),
                [k, e, ..] => {
                    self.vars.push((k.clone(), key));
                    self.vars.push((e.clone(), elem.clone()));
                }
            }
            let flow = self.walk(body, &elem);
            self.vars.truncate(scope);
            if matches!(flow?, Flow::Break) {
                break;
            }
        }
        Ok(Flow::Normal)
    }

    /// Evaluate a pipeline and bind its declared or assigned variables.
    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value, Fail> {
        let v = self.pipe_value(pipe, dot)?;
        for name in &pipe.vars {
            if pipe.assign {
                if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    slot.1 = v.clone();
                }
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn pipe_value(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value, Fail> {
        let mut last = None;
        for cmd in &pipe.cmds {
            last = Some(self.cmd(cmd, dot, last)?);
        }
        Ok(last.unwrap_or(Value::Null))
    }

    fn cmd(&mut self, cmd: &Cmd, dot: &Value, piped: Option<Value>) -> Result<Value, Fail> {
        self.step(cmd.pos)?;
        match &cmd.args[0] {
            Operand::Func(name, pos) => self.call(name, *pos, &cmd.args[1..], dot, piped),
            Operand::Fields(fields) | Operand::Var(_, fields) if cmd.args.len() > 1 || piped.is_some() => {
                self.method(cmd, fields, dot, piped)
            }
            op => {
                if piped.is_some() {
                    return Err(Fail {
                        pos: cmd.pos,
                        msg: "can't give argument to non-function".into(),
                    });
                }
                self.operand(op, dot, cmd.pos)
            }
        }
    }

    /// `.Tags.Contains "x"`: the last field names a method of the value before it. consul-template's
    /// `ServiceTags.Contains` is the one templates use.
    fn method(&mut self, cmd: &Cmd, fields: &[String], dot: &Value, piped: Option<Value>) -> Result<Value, Fail> {
        let fail = |msg: String| Fail { pos: cmd.pos, msg };
        let (name, receiver_fields) = fields.split_last().ok_or_else(|| fail("missing method name".into()))?;
        let receiver = match &cmd.args[0] {
            Operand::Var(var, _) => self.operand(&Operand::Var(var.clone(), receiver_fields.to_vec()), dot, cmd.pos)?,
            _ if receiver_fields.is_empty() => dot.clone(),
            _ => self.operand(&Operand::Fields(receiver_fields.to_vec()), dot, cmd.pos)?,
        };
        let mut args = Vec::new();
        for arg in &cmd.args[1..] {
            args.push(self.operand(arg, dot, cmd.pos)?);
        }
        args.extend(piped);
        match (name.as_str(), &receiver, args.as_slice()) {
            ("Contains", Value::List(items), [needle]) => Ok(Value::Bool(items.iter().any(|i| i == needle))),
            _ => Err(fail(format!(
                "can't call method/function {name:?} with {} args on {}",
                args.len(),
                receiver.kind()
            ))),
        }
    }

    fn call(
        &mut self,
        name: &str,
        pos: usize,
        args: &[Operand],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, Fail> {
        // `and`/`or` evaluate their arguments only as far as needed, as Go's do since 1.18.
        if name == "and" || name == "or" {
            let total = args.len() + usize::from(piped.is_some());
            if total == 0 {
                return Err(Fail {
                    pos,
                    msg: format!("wrong number of args for {name}: want at least 1 got 0"),
                });
            }
            let mut v = Value::Null;
            for arg in args {
                v = self.operand(arg, dot, pos)?;
                if v.truthy() != (name == "and") {
                    return Ok(v);
                }
            }
            return Ok(piped.unwrap_or(v));
        }
        let mut values = Vec::with_capacity(args.len() + 1);
        for arg in args {
            values.push(self.operand(arg, dot, pos)?);
        }
        values.extend(piped);
        funcs::call(self, name, values).map_err(|msg| Fail {
            pos,
            msg: format!("error calling {name}: {msg}"),
        })
    }

    /// One operand; `pos` locates errors from its field chain.
    fn operand(&mut self, op: &Operand, dot: &Value, pos: usize) -> Result<Value, Fail> {
        let (base, fields, pos) = match op {
            Operand::Fields(fields) => (dot.clone(), fields.as_slice(), pos),
            Operand::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                (v, fields.as_slice(), pos)
            }
            Operand::Dot => return Ok(dot.clone()),
            Operand::Nil => return Ok(Value::Null),
            Operand::Bool(b) => return Ok(Value::Bool(*b)),
            Operand::Str(s) => return Ok(Value::Str(s.clone())),
            Operand::Int(i) => return Ok(Value::Int(*i)),
            Operand::Float(f) => return Ok(Value::Float(*f)),
            Operand::Func(name, fpos) => return self.call(name, *fpos, &[], dot, None),
            Operand::Paren(pipe, fields) => (self.pipe_value(pipe, dot)?, fields.as_slice(), pipe.pos),
        };
        let mut v = base;
        for f in fields {
            v = v.field(f).map_err(|msg| Fail { pos, msg })?;
        }
        Ok(v)
    }
}
