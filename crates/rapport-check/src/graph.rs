//! One petgraph graph per flow: nodes are states, edges are transitions labelled with
//! their kind. Reachability, dead ends and instant loops are graph algorithms here.

use std::collections::HashMap;
use std::fmt::Write as _;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, EdgeFiltered, EdgeRef};
use rapport_syntax::ast::{ActionKind, Flow, PatternKind, TransitionKind};
use rapport_syntax::{Code, Diagnostic, Span};

/// How a run gets from one state to another.
#[derive(Debug, Clone, PartialEq)]
pub enum EdgeKind {
    /// `on reply PATTERN`: the label describes the pattern.
    Reply(String),
    Comment(String),
    Event(String),
    AgentReleased,
    AgentReplied,
    AgentApproved,
    AgentRejected,
    /// `after DURATION`, in seconds.
    After(u64),
    /// `-> STATE` as an entry action: no waiting.
    Immediate,
    /// `-> STATE when COND`: no waiting, when COND holds. `condition` is COND as written;
    /// `defines` the slots COND needs a value of to hold (`has x`, `x == "y"`), so they
    /// are set along this edge.
    Branch {
        condition: String,
        defines: Vec<String>,
    },
    /// A valid answer to the state's `ask` (the slot it sets).
    AskThen(String),
    /// Retries used up on the state's `ask`.
    AskElse,
}

impl EdgeKind {
    /// The label shown on graphs and in paths.
    pub fn label(&self) -> String {
        match self {
            EdgeKind::Reply(p) => format!("reply {p}"),
            EdgeKind::Comment(p) => format!("comment {p}"),
            EdgeKind::Event(e) => format!("event {e}"),
            EdgeKind::AgentReleased => "agent released".into(),
            EdgeKind::AgentReplied => "agent replied".into(),
            EdgeKind::AgentApproved => "draft approved".into(),
            EdgeKind::AgentRejected => "draft rejected".into(),
            EdgeKind::After(s) => format!("after {}", duration(*s)),
            EdgeKind::Immediate => "at once".into(),
            EdgeKind::Branch { condition, .. } => format!("when {condition}"),
            EdgeKind::AskThen(slot) => format!("answer {slot}"),
            EdgeKind::AskElse => "no valid answer".into(),
        }
    }

    /// Whether the edge is taken at once on entering the state (`->`, with or without a
    /// condition).
    pub fn is_immediate(&self) -> bool {
        matches!(self, EdgeKind::Immediate | EdgeKind::Branch { .. })
    }

    /// Whether the contact must write something for this edge to be taken.
    pub fn needs_contact(&self) -> bool {
        matches!(
            self,
            EdgeKind::Reply(_) | EdgeKind::Comment(_) | EdgeKind::AskThen(_) | EdgeKind::AskElse
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub kind: EdgeKind,
    pub span: Span,
    /// A flow-wide transition, present from every state.
    pub flow_wide: bool,
}

/// A flow's states and transitions.
#[derive(Debug)]
pub struct FlowGraph {
    /// Node weights are state indexes into `Flow::states`.
    pub graph: DiGraph<usize, Edge>,
    /// `nodes[i]` is the node of state `i`.
    pub nodes: Vec<NodeIndex>,
}

impl FlowGraph {
    /// The state index of a node.
    pub fn state(&self, node: NodeIndex) -> usize {
        self.graph[node]
    }

    /// Outgoing edges of state `i`: (target state, edge).
    pub fn edges_from(&self, i: usize) -> impl Iterator<Item = (usize, &Edge)> + '_ {
        self.graph
            .edges(self.nodes[i])
            .map(move |e| (self.graph[e.target()], e.weight()))
    }
}

/// Builds the graph; targets that do not resolve are left out (reported by `resolve`).
pub(crate) fn build(flow: &Flow, states: &HashMap<&str, usize>) -> FlowGraph {
    let mut graph = DiGraph::with_capacity(flow.states.len(), flow.states.len() * 3);
    let nodes: Vec<NodeIndex> = (0..flow.states.len()).map(|i| graph.add_node(i)).collect();
    let target = |name: &str| states.get(name).map(|&i| nodes[i]);
    for (i, state) in flow.states.iter().enumerate() {
        for action in &state.actions {
            match &action.kind {
                ActionKind::Goto(t) => {
                    if let Some(to) = target(&t.value) {
                        graph.add_edge(
                            nodes[i],
                            to,
                            Edge {
                                kind: EdgeKind::Immediate,
                                span: action.span,
                                flow_wide: false,
                            },
                        );
                    }
                }
                ActionKind::Branch { target: t, when } => {
                    if let Some(to) = target(&t.value) {
                        graph.add_edge(
                            nodes[i],
                            to,
                            Edge {
                                kind: EdgeKind::Branch {
                                    condition: rapport_syntax::format_condition(when),
                                    defines: defined_by(when),
                                },
                                span: action.span,
                                flow_wide: false,
                            },
                        );
                    }
                }
                ActionKind::Ask(ask) => {
                    if let Some(to) = target(&ask.then.value) {
                        graph.add_edge(
                            nodes[i],
                            to,
                            Edge {
                                kind: EdgeKind::AskThen(ask.slot.value.clone()),
                                span: ask.then.span,
                                flow_wide: false,
                            },
                        );
                    }
                    if let Some(to) = ask.otherwise.as_ref().and_then(|o| target(&o.value)) {
                        graph.add_edge(
                            nodes[i],
                            to,
                            Edge {
                                kind: EdgeKind::AskElse,
                                span: action.span,
                                flow_wide: false,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        let own = state.transitions.iter().map(|t| (t, false));
        let wide = flow.transitions.iter().map(|t| (t, true));
        for (t, flow_wide) in wide.chain(own) {
            if let Some(to) = target(&t.target.value) {
                let kind = match &t.kind {
                    TransitionKind::Reply(p) => EdgeKind::Reply(pattern_label(&p.kind)),
                    TransitionKind::Comment(p) => EdgeKind::Comment(pattern_label(&p.kind)),
                    TransitionKind::Event(e) => EdgeKind::Event(e.value.clone()),
                    TransitionKind::Agent(a) => match a.value {
                        rapport_syntax::ast::AgentEvent::Released => EdgeKind::AgentReleased,
                        rapport_syntax::ast::AgentEvent::Replied => EdgeKind::AgentReplied,
                        rapport_syntax::ast::AgentEvent::Approved => EdgeKind::AgentApproved,
                        rapport_syntax::ast::AgentEvent::Rejected => EdgeKind::AgentRejected,
                    },
                    TransitionKind::After(d) => EdgeKind::After(d.value.seconds),
                };
                graph.add_edge(
                    nodes[i],
                    to,
                    Edge {
                        kind,
                        span: t.span,
                        flow_wide,
                    },
                );
            }
        }
    }
    FlowGraph { graph, nodes }
}

/// The names a condition needs a value of to hold: `has x` and every comparison (a
/// comparison with a missing value is false); all of an `and`'s parts, what every part
/// of an `or` needs, nothing under a `not`.
fn defined_by(c: &rapport_syntax::ast::Condition) -> Vec<String> {
    use rapport_syntax::ast::ConditionKind;
    match &c.kind {
        ConditionKind::Has(n) => vec![n.value.clone()],
        ConditionKind::Compare { token, .. } => vec![token.value.clone()],
        ConditionKind::Not(_) => Vec::new(),
        ConditionKind::And(parts) => {
            let mut all: Vec<String> = parts.iter().flat_map(defined_by).collect();
            all.sort();
            all.dedup();
            all
        }
        ConditionKind::Or(parts) => {
            let mut each = parts.iter().map(defined_by);
            let first = each.next().unwrap_or_default();
            let rest: Vec<Vec<String>> = each.collect();
            first
                .into_iter()
                .filter(|n| rest.iter().all(|r| r.contains(n)))
                .collect()
        }
    }
}

fn pattern_label(p: &PatternKind) -> String {
    let list = |v: &[rapport_syntax::ast::Spanned<String>]| {
        v.iter()
            .map(|s| format!("\"{}\"", s.value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match p {
        PatternKind::Exact(v) => list(v),
        PatternKind::Contains(v) => format!("contains {}", list(v)),
        PatternKind::Matches(r) => format!("matches /{}/", r.source),
        PatternKind::Intent(n) => format!("intent {}", n.value),
        PatternKind::Sentiment { op, value } => format!("sentiment {} {value}", op.as_str()),
        PatternKind::Any => "any".into(),
    }
}

/// `90m`, `1h`, `24h`, `2d`: hours up to two days (as windows are written), else the
/// largest unit that divides evenly.
pub(crate) fn duration(seconds: u64) -> String {
    if seconds.is_multiple_of(3_600) && seconds > 0 && seconds < 2 * 86_400 {
        return format!("{}h", seconds / 3_600);
    }
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// Unreachable states, dead ends and instant loops.
pub(crate) fn structure(flow: &Flow, g: &FlowGraph, diags: &mut Vec<Diagnostic>) {
    if flow.states.is_empty() {
        diags.push(
            Diagnostic::error(
                Code::DeadEnd,
                format!("flow `{}` has no states", flow.name.value),
            )
            .label(flow.name.span, "nothing to run")
            .help("add at least one state, e.g. `state start { send \"Hi!\"  end }`"),
        );
        return;
    }
    let mut reached = vec![false; flow.states.len()];
    let mut bfs = Bfs::new(&g.graph, g.nodes[0]);
    while let Some(n) = bfs.next(&g.graph) {
        reached[g.state(n)] = true;
    }
    for (i, state) in flow.states.iter().enumerate() {
        if !reached[i] {
            diags.push(
                Diagnostic::warning(Code::Unreachable, format!("state `{}` can never be reached", state.name.value))
                    .label(state.name.span, "no transition leads here")
                    .help(format!(
                        "add a transition to it (e.g. `-> {}`) from a state the run reaches, or delete it",
                        state.name.value
                    )),
            );
        }
        let ends = state
            .actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::End | ActionKind::Handoff { .. }));
        // A branch leaves only when its condition holds.
        let leaves = g
            .edges_from(i)
            .any(|(_, e)| !matches!(e.kind, EdgeKind::Branch { .. }));
        let branches = g
            .edges_from(i)
            .any(|(_, e)| matches!(e.kind, EdgeKind::Branch { .. }));
        if !ends && !leaves && branches {
            diags.push(
                Diagnostic::error(Code::DeadEnd, format!("state `{}` is a dead end when none of its branches holds", state.name.value))
                    .label(state.name.span, "a run that gets here and takes no branch can never leave")
                    .help("close the branches with a default `-> STATE` (no `when`), or add a transition (`on reply ... -> STATE`, `after 24h -> STATE`)"),
            );
        } else if !ends && !leaves {
            diags.push(
                Diagnostic::error(Code::DeadEnd, format!("state `{}` is a dead end", state.name.value))
                    .label(state.name.span, "a run that gets here can never leave")
                    .help("add a way out (`on reply ... -> STATE`, `after 24h -> STATE`, `-> STATE`) or finish with `end`"),
            );
        }
        // Left only through a flow-wide transition: the run stays here until one fires,
        // which may be never, and then until the run expires.
        // (A branch may hold or not: it does not make the state one a run always leaves.)
        if !ends
            && leaves
            && g.edges_from(i)
                .all(|(_, e)| e.flow_wide || matches!(e.kind, EdgeKind::Branch { .. }))
        {
            diags.push(
                Diagnostic::warning(
                    Code::FlowWideExitOnly,
                    format!("state `{}` can only be left by a flow-wide transition", state.name.value),
                )
                .label(state.name.span, "a run that gets here waits, possibly until it expires")
                .help("if the conversation is over here, finish with `end`; otherwise add a way out of this state (`after 24h -> STATE`, `on reply ... -> STATE`)"),
            );
        }
    }

    drafts(flow, diags);

    // Instant loops: strongly connected components over `->` edges alone.
    let immediate = EdgeFiltered::from_fn(&g.graph, |e| e.weight().kind.is_immediate());
    for component in tarjan_scc(&immediate) {
        let looped = component.len() > 1
            || g.graph
                .edges_connecting(component[0], component[0])
                .any(|e| e.weight().kind.is_immediate());
        if !looped {
            continue;
        }
        let mut members: Vec<usize> = component.iter().map(|&n| g.state(n)).collect();
        members.sort_unstable();
        let first = members[0];
        let cycle = cycle_from(g, first, &members);
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| flow.states[i].name.value.as_str())
            .collect();
        let message = if cycle.len() <= 2 {
            format!("state `{}` goes on to itself at once, forever", names[0])
        } else {
            format!(
                "states {} go round in a loop with no wait",
                quoted_path(&names)
            )
        };
        let mut d = Diagnostic::error(Code::InstantLoop, message);
        for &i in cycle[..cycle.len() - 1].iter().take(LOOP_LABELS) {
            if let Some(a) = flow.states[i]
                .actions
                .iter()
                .find(|a| matches!(a.kind, ActionKind::Goto(_) | ActionKind::Branch { .. }))
            {
                d = d.label(a.span, "goes on at once");
            }
        }
        diags.push(d.help("put a wait on the loop: replace one `-> STATE` with `after DURATION -> STATE` or an `on reply` transition"));
    }
}

/// Drafts a run can never have decided: a draft whose state goes on at once (`->`, a
/// branch, `end`) is dropped as it is made; `on agent approved|rejected` in a state that
/// drafts nothing can never fire.
fn drafts(flow: &Flow, diags: &mut Vec<Diagnostic>) {
    use rapport_syntax::ast::{AgentEvent, TransitionKind};
    for state in &flow.states {
        let draft = state.actions.iter().position(|a| {
            matches!(
                a.kind,
                ActionKind::Send {
                    approve: Some(_),
                    ..
                }
            )
        });
        if let Some(at) = draft {
            let leaves = state.actions[at..].iter().find(|a| {
                matches!(
                    a.kind,
                    ActionKind::Goto(_) | ActionKind::Branch { .. } | ActionKind::End
                )
            });
            if let Some(l) = leaves {
                diags.push(
                    Diagnostic::error(
                        Code::DraftMisplaced,
                        format!(
                            "state `{}` is left at once, so its draft can never be approved",
                            state.name.value
                        ),
                    )
                    .label(state.actions[at].span, "a draft belongs to its state")
                    .label(l.span, format!("`{}` leaves it at once", l.kind.keyword()))
                    .help("wait in the state for the decision: replace this with `on agent approved -> STATE` (and `on agent rejected`, `after DURATION`)"),
                );
            }
            continue;
        }
        for t in &state.transitions {
            if let TransitionKind::Agent(e) = &t.kind {
                if matches!(e.value, AgentEvent::Approved | AgentEvent::Rejected) {
                    diags.push(
                        Diagnostic::error(
                            Code::DraftMisplaced,
                            format!(
                                "state `{}` drafts nothing, so `on agent {}` can never fire",
                                state.name.value,
                                if e.value == AgentEvent::Approved { "approved" } else { "rejected" }
                            ),
                        )
                        .label(t.span, "no draft of this state to decide on")
                        .help("move it to the state with the `send ... approve by QUEUE`, or make a send of this state a draft"),
                    );
                }
            }
        }
    }
}

/// States of an instant loop labelled in its diagnostic (the message names them all,
/// elided in the middle when long).
const LOOP_LABELS: usize = 5;

/// The loop through `start` following `->` edges inside `members`, ending back at `start`.
fn cycle_from(g: &FlowGraph, start: usize, members: &[usize]) -> Vec<usize> {
    let mut path = vec![start];
    let mut current = start;
    for _ in 0..members.len() {
        let next = g
            .edges_from(current)
            .filter(|(to, e)| e.kind.is_immediate() && members.contains(to))
            .map(|(to, _)| to)
            .find(|to| *to == start || !path.contains(to));
        match next {
            Some(n) => {
                path.push(n);
                if n == start {
                    break;
                }
                current = n;
            }
            None => break,
        }
    }
    path
}

/// `a → b → c` with each name in backticks (a long loop elided in the middle).
pub(crate) fn quoted_path(names: &[&str]) -> String {
    let mut steps: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    elide(&mut steps);
    steps.join(" → ")
}

/// Steps of a path shown at each end; a longer path shows these and counts the middle.
const PATH_ENDS: usize = 5;

/// Shortens a long path to its first and last `PATH_ENDS` steps with `… N more …` in
/// between: a path through thousands of states would otherwise be printed whole, in
/// every diagnostic that shows it.
pub(crate) fn elide(steps: &mut Vec<String>) {
    if steps.len() > 2 * PATH_ENDS + 1 {
        let more = steps.len() - 2 * PATH_ENDS;
        steps.splice(
            PATH_ENDS..steps.len() - PATH_ENDS,
            [format!("… {more} more …")],
        );
    }
}

/// The edges as drawn: (source state, or `None` for "any state", label, target state).
/// A flow-wide transition is in the graph once per state; it is drawn once.
fn drawn_edges(g: &FlowGraph) -> Vec<(Option<usize>, String, usize)> {
    let mut out: Vec<(Option<usize>, String, usize)> = Vec::new();
    for e in g.graph.edge_references() {
        let w = e.weight();
        let label = w.kind.label().replace('"', "'");
        let to = g.state(e.target());
        if !w.flow_wide {
            out.push((Some(g.state(e.source())), label, to));
        } else if !out
            .iter()
            .any(|(f, l, t)| f.is_none() && *l == label && *t == to)
        {
            out.push((None, label, to));
        }
    }
    out
}

/// How `rapport graph` draws a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

/// The flow's graph as Mermaid or Graphviz text. Flow-wide transitions are drawn once,
/// from a node standing for every state.
pub fn render(flow: &Flow, g: &FlowGraph, format: GraphFormat) -> String {
    let mut out = String::new();
    let id = |i: usize| format!("s{i}");
    let escape = |s: &str| s.replace('"', "'");
    let terminal = |i: usize| {
        flow.states[i]
            .actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::End))
    };
    let handoff = |i: usize| {
        flow.states[i]
            .actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::Handoff { .. }))
    };
    let has_wide = g.graph.edge_weights().any(|e| e.flow_wide);
    match format {
        GraphFormat::Mermaid => {
            let _ = writeln!(out, "flowchart TD");
            let _ = writeln!(out, "  start_((start)) --> {}", id(0));
            for (i, s) in flow.states.iter().enumerate() {
                let name = escape(&s.name.value);
                let shape = if terminal(i) {
                    format!("{}([\"{name}\"])", id(i))
                } else if handoff(i) {
                    format!("{}{{{{\"{name}\"}}}}", id(i))
                } else {
                    format!("{}[\"{name}\"]", id(i))
                };
                let _ = writeln!(out, "  {shape}");
            }
            if has_wide {
                let _ = writeln!(out, "  any_[/\"any state\"/]");
            }
            for (from, label, to) in drawn_edges(g) {
                let _ = match from {
                    Some(from) => writeln!(out, "  {} -- \"{label}\" --> {}", id(from), id(to)),
                    None => writeln!(out, "  any_ -. \"{label}\" .-> {}", id(to)),
                };
            }
        }
        GraphFormat::Dot => {
            let _ = writeln!(out, "digraph \"{}\" {{", escape(&flow.name.value));
            let _ = writeln!(out, "  rankdir=TB;");
            let _ = writeln!(out, "  start_ [shape=point];");
            for (i, s) in flow.states.iter().enumerate() {
                let shape = if terminal(i) {
                    "doublecircle"
                } else if handoff(i) {
                    "hexagon"
                } else {
                    "box"
                };
                let _ = writeln!(
                    out,
                    "  {} [label=\"{}\", shape={shape}];",
                    id(i),
                    escape(&s.name.value)
                );
            }
            let _ = writeln!(out, "  start_ -> {};", id(0));
            if has_wide {
                let _ = writeln!(
                    out,
                    "  any_ [label=\"any state\", shape=parallelogram, style=dashed];"
                );
            }
            for (from, label, to) in drawn_edges(g) {
                let _ = match from {
                    Some(from) => {
                        writeln!(out, "  {} -> {} [label=\"{label}\"];", id(from), id(to))
                    }
                    None => writeln!(
                        out,
                        "  any_ -> {} [label=\"{label}\", style=dashed];",
                        id(to)
                    ),
                };
            }
            let _ = writeln!(out, "}}");
        }
    }
    out
}
