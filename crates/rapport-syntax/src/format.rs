//! The canonical text of a flow: what `rapport fmt` prints, and what a flow's default
//! version is hashed from.
//!
//! Comments are not in the syntax tree, and every layout choice below is a fixed rule (no
//! options, no line-width heuristics), so two sources that differ only in comments, white
//! space, line breaks or the order of header clauses print the same text, and editing a
//! comment does not make a new version. A tree from a parse without diagnostics prints as
//! text that parses back to the same tree (spans aside), which prints the same again. A
//! tree from a parse with errors prints too, without what the errors left out.
//! `format_flow` is the text to hash for a version: it does not depend on the file the flow
//! is in or on the flows around it.
//!
//! The rules:
//!
//! - Two spaces per level. A flow prints its header clauses one per line in a fixed order —
//!   `title`, `version`, `purpose`, `channels`, `start on` (in source order), `priority`,
//!   `reentry`, `expire after`, `rollout`, `halt when`, `goal` — with one space after the
//!   keyword (no column alignment: one added clause must not re-indent the others), then
//!   its flow-wide transitions, then its states. These groups, and the states, are
//!   separated by one blank line. The flows of a file are separated by one blank line.
//! - A state with no transitions and at most one action, that action being `end`, `hide` or
//!   `-> STATE`, prints on one line: `state done { end }` (`state s {}` when empty). Any
//!   other state prints its entry actions, then its transitions, one per line.
//! - Clauses that continue a statement go on lines of their own, one level deeper: `or
//!   template` of a `send`; `expect`, `retry`, `then` and `else` of an `ask`; `summary` and
//!   `sla` of a `handoff`. `send one of` prints one variant per line, each with a trailing
//!   comma. Everything else — `when` conditions, `with` lists, `choice { ... }` — stays on
//!   its statement's line, however long.
//! - Strings are re-escaped with `\"`, `\\`, `\n` and `\t`, and nothing else. In text for a
//!   person, tokens print as `{name}` / `{name|fallback}` and literal braces as `{{` / `}}`.
//! - Text for a person that spans lines prints as a `"""` block — the lines one level deeper
//!   than the line the block starts on, the closing quotes on a line of their own at that
//!   line's indentation — when a block gives back exactly the same text and reads cleanly:
//!   some line starts with something other than white space (dedenting removes the
//!   indentation all lines share), no line ends with white space (editors strip it), and
//!   there is no carriage return (dedenting drops it). In a block, a `"` that follows
//!   a `"` is written `\"`, so a block never contains `"""`. Any other text, and every
//!   literal string (titles, patterns, choices, tags, condition values), prints on one line
//!   with `\n` for its line breaks.
//! - Durations print in their largest exact unit (`90m`; `3600s` prints as `1h`, `24h` and
//!   `86400s` as `1d`); percentages as their value without trailing zeros (`0.5%`, `25%`);
//!   numbers as Rust prints an `f64` (`30`, `-0.6`); regexes between slashes with every `/`
//!   written `\/` (the parser turns `\/` back into `/`, so any regex it built prints back
//!   to itself).
//! - Conditions print with the fewest parentheses that keep the tree's grouping: `not`
//!   binds tighter than `and`, `and` tighter than `or`; a group the tree keeps apart (an
//!   `or` inside an `or`, say) keeps its parentheses.

use crate::ast::*;

const INDENT: &str = "  ";

/// Every flow of the file in canonical form, separated by one blank line.
pub fn format_file(file: &FlowFile) -> String {
    file.flows
        .iter()
        .map(format_flow)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The flow's canonical text, ending with a line break: what its version is hashed from.
pub fn format_flow(flow: &Flow) -> String {
    let mut printer = Printer::default();
    printer.flow(flow);
    printer.out
}

/// What `rapport fmt` writes: the file's canonical form with every comment of `notes`
/// (see [`crate::comments`]) where it was written. Without comments it is
/// [`format_file`]: a flow's version does not depend on its comments or layout.
pub fn format_file_with(file: &FlowFile, notes: &crate::comments::Notes) -> String {
    let mut printer = Printer {
        out: String::new(),
        notes: Some(notes),
    };
    for (i, flow) in file.flows.iter().enumerate() {
        if i > 0 {
            printer.out.push('\n');
        }
        printer.flow(flow);
    }
    for note in &notes.end {
        if note.blank_before {
            printer.blank();
        }
        printer.line(0, &note.text);
    }
    printer.out
}

#[derive(Default)]
struct Printer<'a> {
    out: String,
    /// Comments to keep (`rapport fmt`); none for the canonical text of a version.
    notes: Option<&'a crate::comments::Notes>,
}

impl Printer<'_> {
    fn line(&mut self, depth: usize, text: &str) {
        push_indent(&mut self.out, depth);
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// One blank line, unless the text starts here, a block opens just above, or there
    /// is one already.
    fn blank(&mut self) {
        if !(self.out.is_empty() || self.out.ends_with("\n\n") || self.out.ends_with("{\n")) {
            self.out.push('\n');
        }
    }

    /// The comments written above the statement at `at`, and the blank lines around
    /// them (`blank`: whether a blank line just above the statement is kept).
    fn lead(&mut self, at: usize, depth: usize, blank: bool) {
        let Some(notes) = self.notes else {
            return;
        };
        if let Some(list) = notes.leading.get(&at) {
            for note in list {
                if note.blank_before {
                    self.blank();
                }
                self.line(depth, &note.text);
            }
        }
        if blank && notes.blank_before.contains(&at) {
            self.blank();
        }
    }

    /// Puts the comments written after the statement at `at` at the end of the first
    /// line printed from `from` on.
    fn trail(&mut self, at: usize, from: usize) {
        let Some(list) = self.notes.and_then(|n| n.trailing.get(&at)) else {
            return;
        };
        let end = self.out[from..]
            .find('\n')
            .map_or(self.out.len(), |i| from + i);
        if self.out[from..end].ends_with("\"\"\"") {
            // The line opens a `"""` block: a comment after it would be text. It goes on
            // the line above, at the statement's indentation.
            let indent: String = self.out[from..end]
                .chars()
                .take_while(|c| *c == ' ')
                .collect();
            let lines: String = list.iter().map(|c| format!("{indent}{c}\n")).collect();
            self.out.insert_str(from, &lines);
            return;
        }
        let text: String = list.iter().map(|c| format!("  {c}")).collect();
        self.out.insert_str(end, &text);
    }

    /// Whether comments belong to the statement at `at`.
    fn noted(&self, at: usize) -> bool {
        self.notes
            .is_some_and(|n| n.leading.contains_key(&at) || n.trailing.contains_key(&at))
    }

    /// Whether comments are written above the statement at `at` (a `}` with some cannot
    /// close a block printed on one line; one with a comment after it can).
    fn led(&self, at: usize) -> bool {
        self.notes.is_some_and(|n| n.leading.contains_key(&at))
    }

    /// Whether comments come after the statement at `at` on its line.
    fn trailed(&self, at: usize) -> bool {
        self.notes.is_some_and(|n| n.trailing.contains_key(&at))
    }

    fn flow(&mut self, flow: &Flow) {
        let header = header(flow);
        let name = &flow.name.value;
        let close = flow.span.end.saturating_sub(1);
        self.lead(flow.span.start, 0, true);
        let from = self.out.len();
        // One line holds one comment at most: two go on lines of their own.
        if header.is_empty()
            && flow.transitions.is_empty()
            && flow.states.is_empty()
            && !self.led(close)
            && !(self.trailed(flow.span.start) && self.trailed(close))
        {
            self.line(0, &format!("flow {name} {{}}"));
            self.trail(flow.span.start, from);
            self.trail(close, from);
            return;
        }
        self.line(0, &format!("flow {name} {{"));
        self.trail(flow.span.start, from);
        let mut after_group = false;
        for (at, clause) in &header {
            self.lead(*at, 1, true);
            let from = self.out.len();
            self.line(1, clause);
            self.trail(*at, from);
            after_group = true;
        }
        if !flow.transitions.is_empty() {
            if after_group {
                self.blank();
            }
            for t in &flow.transitions {
                self.lead(t.span.start, 1, true);
                let from = self.out.len();
                self.line(1, &transition(t));
                self.trail(t.span.start, from);
            }
            after_group = true;
        }
        for state in &flow.states {
            if after_group {
                self.blank();
            }
            self.state(state, 1);
            after_group = true;
        }
        self.lead(close, 1, false);
        let from = self.out.len();
        self.line(0, "}");
        self.trail(close, from);
    }

    fn state(&mut self, state: &State, depth: usize) {
        let name = &state.name.value;
        let close = state.span.end.saturating_sub(1);
        self.lead(state.span.start, depth, true);
        let from = self.out.len();
        // One line, when nothing inside has comments of its own.
        // One line holds one comment at most: with two, the block takes several lines.
        let inner_noted = self.led(close)
            || (self.trailed(state.span.start) && self.trailed(close))
            || state.actions.iter().any(|a| self.noted(a.span.start));
        if state.transitions.is_empty() && !inner_noted {
            let one_line = match state.actions.as_slice() {
                [] => Some(format!("state {name} {{}}")),
                [only] => bare_action(&only.kind).map(|word| format!("state {name} {{ {word} }}")),
                _ => None,
            };
            if let Some(line) = one_line {
                self.line(depth, &line);
                self.trail(state.span.start, from);
                return self.trail(close, from);
            }
        }
        self.line(depth, &format!("state {name} {{"));
        self.trail(state.span.start, from);
        for action in &state.actions {
            self.lead(action.span.start, depth + 1, true);
            let from = self.out.len();
            self.action(&action.kind, depth + 1);
            self.trail(action.span.start, from);
        }
        for t in &state.transitions {
            self.lead(t.span.start, depth + 1, true);
            let from = self.out.len();
            self.line(depth + 1, &transition(t));
            self.trail(t.span.start, from);
        }
        self.lead(close, depth + 1, false);
        let from = self.out.len();
        self.line(depth, "}");
        self.trail(close, from);
    }

    fn action(&mut self, kind: &ActionKind, d: usize) {
        if let Some(word) = bare_action(kind) {
            return self.line(d, &word);
        }
        match kind {
            ActionKind::Send {
                text: t,
                template,
                approve,
            } => {
                self.line(d, &format!("send {}", text(t, d)));
                if let Some(template) = template {
                    let with = with_pairs(&template.with, d + 1);
                    self.line(d + 1, &format!("or template {}{with}", template.name.value));
                }
                if let Some(a) = approve {
                    let within = a
                        .within
                        .as_ref()
                        .map(|w| format!(" within {}", duration(w.value)))
                        .unwrap_or_default();
                    self.line(d + 1, &format!("approve by {}{within}", a.queue.value));
                }
            }
            ActionKind::SendOneOf { variants } => {
                self.line(d, "send one of {");
                for (key, t) in variants {
                    self.line(d + 1, &format!("{}: {},", key.value, text(t, d + 1)));
                }
                self.line(d, "}");
            }
            ActionKind::Reply(t) => self.line(d, &format!("reply {}", text(t, d))),
            ActionKind::Review(t) => self.line(d, &format!("review {}", text(t, d))),
            ActionKind::Ask(ask) => self.ask(ask, d),
            ActionKind::Set { slot, value } => {
                self.line(d, &format!("set {} = {}", slot.value, text(value, d)));
            }
            ActionKind::Tag(label) => self.line(d, &format!("tag {}", quoted(&label.value))),
            ActionKind::Emit { event, with } => {
                self.line(d, &format!("emit {}{}", event.value, with_pairs(with, d)));
            }
            ActionKind::Handoff {
                queue,
                summary,
                sla,
            } => {
                self.line(d, &format!("handoff {}", queue.value));
                if let Some(summary) = summary {
                    self.line(d + 1, &format!("summary {}", text(summary, d + 1)));
                }
                if let Some(sla) = sla {
                    self.line(d + 1, &format!("sla {}", duration(sla.value)));
                }
            }
            ActionKind::Branch { target, when: w } => {
                self.line(d, &format!("-> {} when {}", target.value, or_condition(w)));
            }
            ActionKind::Hide | ActionKind::End | ActionKind::Goto(_) => {}
        }
    }

    fn ask(&mut self, ask: &Ask, d: usize) {
        self.line(
            d,
            &format!("ask {} {}", ask.slot.value, text(&ask.question, d)),
        );
        if let Some(template) = &ask.template {
            let with = with_pairs(&template.with, d + 1);
            self.line(d + 1, &format!("or template {}{with}", template.name.value));
        }
        if let Some(e) = &ask.expect {
            self.line(d + 1, &format!("expect {}", expect(&e.value)));
        }
        if let Some(retry) = &ask.retry {
            let reprompt = text(&retry.reprompt, d + 1);
            self.line(d + 1, &format!("retry {} {reprompt}", retry.times.value));
        }
        self.line(d + 1, &format!("then -> {}", ask.then.value));
        if let Some(otherwise) = &ask.otherwise {
            self.line(d + 1, &format!("else -> {}", otherwise.value));
        }
    }
}

/// The actions that are a single word (or `-> STATE`), which a state may hold on one line.
fn bare_action(kind: &ActionKind) -> Option<String> {
    match kind {
        ActionKind::End => Some("end".into()),
        ActionKind::Hide => Some("hide".into()),
        ActionKind::Goto(target) => Some(format!("-> {}", target.value)),
        _ => None,
    }
}

/// The header clauses in their fixed order, each with where it starts in the source.
fn header(flow: &Flow) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    if let Some(title) = &flow.title {
        lines.push((title.span.start, format!("title {}", quoted(&title.value))));
    }
    if let Some(version) = &flow.version {
        lines.push((version.span.start, format!("version {}", version.value)));
    }
    if let Some(purpose) = &flow.purpose {
        let word = match purpose.value {
            Purpose::Marketing => "marketing",
            Purpose::Transactional => "transactional",
        };
        lines.push((purpose.span.start, format!("purpose {word}")));
    }
    if let Some(channels) = &flow.channels {
        lines.push((
            channels.span.start,
            format!("channels {}", names(&channels.value)),
        ));
    }
    for trigger in &flow.triggers {
        lines.push((trigger.span.start, self::trigger(trigger)));
    }
    if let Some(priority) = &flow.priority {
        lines.push((priority.span.start, format!("priority {}", priority.value)));
    }
    if let Some(reentry) = &flow.reentry {
        let policy = match reentry.value {
            Reentry::Always => "always".to_string(),
            Reentry::Never => "never".to_string(),
            Reentry::After(d) => format!("after {}", duration(d)),
        };
        lines.push((reentry.span.start, format!("reentry {policy}")));
    }
    if let Some(expire) = &flow.expire_after {
        lines.push((
            expire.span.start,
            format!("expire after {}", duration(expire.value)),
        ));
    }
    if let Some(rollout) = &flow.rollout {
        let stages: Vec<String> = rollout.stages.iter().map(|s| percent(s.value)).collect();
        let mut line = format!("rollout {}", stages.join(" -> "));
        if let Some(every) = &rollout.every {
            line.push_str(&format!(" every {}", duration(every.value)));
        }
        lines.push((rollout.span.start, line));
    }
    if let Some(halt) = &flow.halt {
        let guards: Vec<String> = halt
            .guards
            .iter()
            .map(|g| {
                let threshold = percent(g.threshold.value);
                format!("{} {} {threshold}", g.metric.value, g.op.as_str())
            })
            .collect();
        let mut line = format!("halt when {}", guards.join(" or "));
        if let Some(runs) = &halt.after_runs {
            line.push_str(&format!(" after {} runs", runs.value));
        }
        lines.push((halt.span.start, line));
    }
    if let Some(goal) = &flow.goal {
        let within = duration(goal.within.value);
        lines.push((
            goal.span.start,
            format!("goal {} within {within}", goal.event.value),
        ));
    }
    lines
}

fn trigger(trigger: &Trigger) -> String {
    let mut line = match &trigger.kind {
        TriggerKind::Message(p) => format!("start on message{}", optional_pattern(p)),
        TriggerKind::Comment(p) => format!("start on comment{}", optional_pattern(p)),
        TriggerKind::Event(name) => format!("start on event {}", name.value),
    };
    line.push_str(&when(&trigger.when));
    line
}

fn optional_pattern(p: &Option<Pattern>) -> String {
    match p {
        Some(p) => format!(" {}", pattern(p)),
        None => String::new(),
    }
}

fn transition(t: &Transition) -> String {
    let subject = match &t.kind {
        TransitionKind::Reply(p) => format!("on reply {}", pattern(p)),
        TransitionKind::Comment(p) => format!("on comment {}", pattern(p)),
        TransitionKind::Event(name) => format!("on event {}", name.value),
        TransitionKind::Agent(e) => match e.value {
            AgentEvent::Released => "on agent released".to_string(),
            AgentEvent::Replied => "on agent replied".to_string(),
            AgentEvent::Approved => "on agent approved".to_string(),
            AgentEvent::Rejected => "on agent rejected".to_string(),
        },
        TransitionKind::After(d) => format!("after {}", duration(d.value)),
    };
    format!("{subject}{} -> {}", when(&t.when), t.target.value)
}

fn pattern(p: &Pattern) -> String {
    match &p.kind {
        PatternKind::Exact(words) => quoted_list(words),
        PatternKind::Contains(words) => format!("contains {}", quoted_list(words)),
        PatternKind::Matches(re) => format!("matches {}", regex(re)),
        PatternKind::Intent(name) => format!("intent {}", name.value),
        PatternKind::Sentiment { op, value } => format!("sentiment {} {value}", op.as_str()),
        PatternKind::Any => "any".to_string(),
    }
}

fn expect(e: &Expect) -> String {
    match e {
        Expect::Text => "text".to_string(),
        Expect::Number => "number".to_string(),
        Expect::Email => "email".to_string(),
        Expect::Phone => "phone".to_string(),
        Expect::Regex(re) => regex(re),
        Expect::Choice(choices) => {
            let choices: Vec<String> = choices
                .iter()
                .map(|(key, value)| format!("{} = {}", quoted(&key.value), quoted(&value.value)))
                .collect();
            format!("choice {{ {} }}", choices.join(", "))
        }
    }
}

// ---------------------------------------------------------------------- conditions

/// A condition as `rapport fmt` writes it (`size_help == "yes" and has first_name`).
pub fn format_condition(c: &Condition) -> String {
    or_condition(c)
}

fn when(condition: &Option<Condition>) -> String {
    match condition {
        Some(c) => format!(" when {}", or_condition(c)),
        None => String::new(),
    }
}

/// A condition where an `or` may stand (the whole condition, or inside parentheses).
fn or_condition(c: &Condition) -> String {
    match &c.kind {
        ConditionKind::Or(parts) => parts
            .iter()
            .map(and_condition)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => and_condition(c),
    }
}

/// A condition where an `and` may stand: a part of an `or`.
fn and_condition(c: &Condition) -> String {
    match &c.kind {
        ConditionKind::And(parts) => parts
            .iter()
            .map(not_condition)
            .collect::<Vec<_>>()
            .join(" and "),
        _ => not_condition(c),
    }
}

/// A part of an `and`: `not` and an atom.
fn not_condition(c: &Condition) -> String {
    match &c.kind {
        ConditionKind::Not(inner) => format!("not {}", atom_condition(inner)),
        _ => atom_condition(c),
    }
}

/// What `not` applies to: `has`, a comparison, or anything else in parentheses.
fn atom_condition(c: &Condition) -> String {
    match &c.kind {
        ConditionKind::Has(name) => format!("has {}", name.value),
        ConditionKind::Compare { token, op, value } => {
            let value = match value {
                Literal::String(s) => quoted(s),
                Literal::Number(n) => n.to_string(),
            };
            format!("{} {} {value}", token.value, op.as_str())
        }
        ConditionKind::Or(_) | ConditionKind::And(_) | ConditionKind::Not(_) => {
            format!("({})", or_condition(c))
        }
    }
}

// ---------------------------------------------------------------------- leaves

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str(INDENT);
    }
}

fn names(names: &[Name]) -> String {
    names
        .iter()
        .map(|n| n.value.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn quoted_list(words: &[Spanned<String>]) -> String {
    words
        .iter()
        .map(|w| quoted(&w.value))
        .collect::<Vec<_>>()
        .join(", ")
}

fn with_pairs(pairs: &[(Name, Text)], depth: usize) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{} = {}", key.value, text(value, depth)))
        .collect();
    format!(" with {}", pairs.join(", "))
}

/// `90m`, `1h`, `1d`: the largest unit that divides the duration.
fn duration(d: Duration) -> String {
    const UNITS: [(u64, &str); 3] = [(86_400, "d"), (3_600, "h"), (60, "m")];
    let s = d.seconds;
    for (size, unit) in UNITS {
        let (whole, rest) = (s / size, s % size);
        if whole > 0 && rest == 0 {
            return format!("{whole}{unit}");
        }
    }
    format!("{s}s")
}

/// `25%`, `0.5%`, `12.34%`: hundredths of a percent, without trailing zeros.
fn percent(p: Percent) -> String {
    let (whole, hundredths) = (p.basis_points / 100, p.basis_points % 100);
    match hundredths {
        0 => format!("{whole}%"),
        h if h % 10 == 0 => format!("{whole}.{}%", h / 10),
        h => format!("{whole}.{h:02}%"),
    }
}

/// `/.../` with `/` written `\/` (the parser turns every `\/` back into `/`).
fn regex(re: &Regex) -> String {
    format!("/{}/", re.source.replace('/', "\\/"))
}

/// A one-line string literal.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text for a person as a string literal; `depth` is the indentation of the line the
/// literal starts on (a `"""` block is laid out from it).
fn text(t: &Text, depth: usize) -> String {
    let mut raw = String::new();
    for part in &t.parts {
        match part {
            TextPart::Literal(s) => {
                for c in s.chars() {
                    match c {
                        '{' => raw.push_str("{{"),
                        '}' => raw.push_str("}}"),
                        c => raw.push(c),
                    }
                }
            }
            TextPart::Token(token) => {
                raw.push('{');
                raw.push_str(&token.path);
                if let Some(fallback) = &token.fallback {
                    raw.push('|');
                    raw.push_str(fallback);
                }
                raw.push('}');
            }
        }
    }
    if fits_block(&raw) {
        block(&raw, depth)
    } else {
        quoted(&raw)
    }
}

/// Whether a `"""` block gives back exactly `raw`, without white space at line ends: a
/// line that starts with no white space keeps dedenting to the block's own indentation,
/// and a carriage return before a line break would be dropped.
fn fits_block(raw: &str) -> bool {
    raw.contains('\n')
        && !raw.contains('\r')
        && raw
            .split('\n')
            .any(|line| line.starts_with(|c: char| !c.is_whitespace()))
        && raw.split('\n').all(|line| line.trim_end() == line)
}

fn block(raw: &str, depth: usize) -> String {
    let mut out = String::with_capacity(raw.len() + 16);
    out.push_str("\"\"\"\n");
    for line in raw.split('\n') {
        if !line.is_empty() {
            push_indent(&mut out, depth + 1);
            for c in line.chars() {
                match c {
                    // Never three quotes in a row: they would close the block.
                    '"' if out.ends_with('"') => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    c => out.push(c),
                }
            }
        }
        out.push('\n');
    }
    push_indent(&mut out, depth);
    out.push_str("\"\"\"");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_largest_exact_unit() {
        let cases = [
            (30, "30s"),
            (90, "90s"),
            (120, "2m"),
            (5_400, "90m"),
            (3_600, "1h"),
            (90_000, "25h"),
            (86_400, "1d"),
            (172_800, "2d"),
            (0, "0s"),
        ];
        for (seconds, want) in cases {
            assert_eq!(duration(Duration { seconds }), want);
        }
    }

    #[test]
    fn percentages_drop_trailing_zeros() {
        let cases = [
            (50, "0.5%"),
            (5, "0.05%"),
            (2_500, "25%"),
            (1_234, "12.34%"),
            (3_050, "30.5%"),
            (10_000, "100%"),
            (0, "0%"),
        ];
        for (basis_points, want) in cases {
            assert_eq!(percent(Percent { basis_points }), want);
        }
    }

    #[test]
    fn text_with_line_breaks_is_a_block_only_when_that_is_exact() {
        let literal = |s: &str| Text {
            span: Default::default(),
            parts: vec![TextPart::Literal(s.to_string())],
        };
        assert_eq!(
            text(&literal("Hi\n\n\"\"\"x\" \\ {"), 1),
            "\"\"\"\n    Hi\n\n    \"\\\"\\\"x\" \\\\ {{\n  \"\"\""
        );
        assert_eq!(
            text(&literal("  indented\nline"), 1),
            "\"\"\"\n      indented\n    line\n  \"\"\""
        );
        assert_eq!(text(&literal(" all\n indented"), 1), "\" all\\n indented\"");
        assert_eq!(text(&literal("\tx\n"), 1), "\"\\tx\\n\"");
        assert_eq!(
            text(&literal("x\n\ty"), 1),
            "\"\"\"\n    x\n    \\ty\n  \"\"\""
        );
        assert_eq!(text(&literal("trailing \nline"), 1), "\"trailing \\nline\"");
        assert_eq!(text(&literal("a\r\nb"), 1), "\"a\r\\nb\"");
        assert_eq!(text(&literal("\n"), 1), "\"\\n\"");
        assert_eq!(text(&literal("one line\t"), 1), "\"one line\\t\"");
    }
}
