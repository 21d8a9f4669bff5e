//! The typed syntax tree of a `.flow` file. Every node carries the span of the source it
//! came from, so later stages can point at it.

use crate::diagnostic::Span;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

/// A name: a flow, state, slot, queue, template, channel or event name.
pub type Name = Spanned<String>;

/// One `.flow` file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlowFile {
    pub flows: Vec<Flow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub name: Name,
    pub span: Span,
    pub title: Option<Spanned<String>>,
    pub version: Option<Spanned<i64>>,
    pub reentry: Option<Spanned<Reentry>>,
    pub purpose: Option<Spanned<Purpose>>,
    pub channels: Option<Spanned<Vec<Name>>>,
    pub triggers: Vec<Trigger>,
    pub priority: Option<Spanned<i64>>,
    pub expire_after: Option<Spanned<Duration>>,
    pub rollout: Option<Rollout>,
    pub halt: Option<Halt>,
    pub goal: Option<Goal>,
    /// Flow-wide transitions, checked in every state before the state's own.
    pub transitions: Vec<Transition>,
    /// In source order; the first is the initial state.
    pub states: Vec<State>,
    /// Parts of this flow had syntax errors and were left out; later stages should not
    /// report what those errors explain (a state with an empty body, say).
    pub recovered: bool,
}

/// A duration in whole seconds (`30s 15m 1h 24h 7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    pub seconds: u64,
}

/// A percentage, kept in hundredths of a percent so `0.5%` is exact (`50`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent {
    pub basis_points: u32,
}

impl Percent {
    pub fn as_f64(self) -> f64 {
        f64::from(self.basis_points) / 100.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    Always,
    Never,
    After(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Marketing,
    Transactional,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub span: Span,
    pub kind: TriggerKind,
    pub when: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TriggerKind {
    Message(Option<Pattern>),
    Comment(Option<Pattern>),
    Event(Name),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub span: Span,
    pub stages: Vec<Spanned<Percent>>,
    pub every: Option<Spanned<Duration>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Halt {
    pub span: Span,
    pub guards: Vec<Guard>,
    /// `after N runs`; the default (100) is applied by the checker.
    pub after_runs: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    pub span: Span,
    pub metric: Name,
    pub op: CompareOp,
    pub threshold: Spanned<Percent>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub span: Span,
    pub event: Name,
    pub within: Spanned<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub name: Name,
    pub span: Span,
    /// Run in order when the state is entered.
    pub actions: Vec<Action>,
    /// Checked in order while the run waits; the first match wins.
    pub transitions: Vec<Transition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub span: Span,
    pub kind: ActionKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    Send {
        text: Text,
        template: Option<TemplateFallback>,
        /// `approve by QUEUE [within DURATION]`: a draft a person decides on.
        approve: Option<Approve>,
    },
    SendOneOf {
        variants: Vec<(Name, Text)>,
    },
    Reply(Text),
    Hide,
    Review(Text),
    Ask(Box<Ask>),
    Set {
        slot: Name,
        value: Text,
    },
    Tag(Spanned<String>),
    Emit {
        event: Name,
        with: Vec<(Name, Text)>,
    },
    Handoff {
        queue: Name,
        summary: Option<Text>,
        sla: Option<Spanned<Duration>>,
    },
    End,
    Goto(Name),
    /// `-> STATE when COND`: taken at once when COND holds; else the next action (only
    /// further branches, or a final `-> STATE`) is tried.
    Branch {
        target: Name,
        when: Condition,
    },
}

impl ActionKind {
    /// The keyword that starts the action, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            ActionKind::Send { .. } | ActionKind::SendOneOf { .. } => "send",
            ActionKind::Reply(_) => "reply",
            ActionKind::Hide => "hide",
            ActionKind::Review(_) => "review",
            ActionKind::Ask(_) => "ask",
            ActionKind::Set { .. } => "set",
            ActionKind::Tag(_) => "tag",
            ActionKind::Emit { .. } => "emit",
            ActionKind::Handoff { .. } => "handoff",
            ActionKind::End => "end",
            ActionKind::Goto(_) | ActionKind::Branch { .. } => "->",
        }
    }
}

/// `approve by QUEUE [within DURATION]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Approve {
    pub span: Span,
    pub queue: Name,
    pub within: Option<Spanned<Duration>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateFallback {
    pub name: Name,
    pub with: Vec<(Name, Text)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub slot: Name,
    pub question: Text,
    /// `or template NAME [with ...]`: how the question is asked outside the window.
    pub template: Option<TemplateFallback>,
    pub expect: Option<Spanned<Expect>>,
    pub retry: Option<Retry>,
    pub then: Name,
    pub otherwise: Option<Name>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Text,
    Number,
    Email,
    Phone,
    Regex(Regex),
    /// `"A" = "footwear"`: key, then the value the slot gets.
    Choice(Vec<(Spanned<String>, Spanned<String>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub span: Span,
    pub times: Spanned<i64>,
    pub reprompt: Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub span: Span,
    pub kind: TransitionKind,
    pub when: Option<Condition>,
    pub target: Name,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransitionKind {
    Reply(Pattern),
    Comment(Pattern),
    Event(Name),
    Agent(Spanned<AgentEvent>),
    After(Spanned<Duration>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEvent {
    Released,
    Replied,
    /// A person approved a draft (3.6).
    Approved,
    /// A person rejected a draft.
    Rejected,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub span: Span,
    pub kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatternKind {
    /// The whole message equals one of these (case, spaces, trailing punctuation ignored).
    Exact(Vec<Spanned<String>>),
    /// A whole word or phrase inside the message.
    Contains(Vec<Spanned<String>>),
    Matches(Regex),
    Intent(Name),
    Sentiment {
        op: CompareOp,
        value: f64,
    },
    Any,
}

/// A regex literal as written between the slashes, with `\/` turned into `/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Regex {
    pub source: String,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub span: Span,
    pub kind: ConditionKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConditionKind {
    Or(Vec<Condition>),
    And(Vec<Condition>),
    Not(Box<Condition>),
    Has(Name),
    Compare {
        token: Name,
        op: CompareOp,
        value: Literal,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Number(f64),
}

/// Text for a person: literal pieces and `{tokens}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub span: Span,
    pub parts: Vec<TextPart>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TextPart {
    Literal(String),
    Token(Token),
}

/// `{name}`, `{event.field}` or `{name|fallback}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub span: Span,
    /// The dotted path, e.g. `event.product_name`.
    pub path: String,
    pub fallback: Option<String>,
}

impl Text {
    /// The tokens used in this text, in order.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.parts.iter().filter_map(|p| match p {
            TextPart::Token(t) => Some(t),
            TextPart::Literal(_) => None,
        })
    }
}
