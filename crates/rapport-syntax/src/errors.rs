//! The one place where pest errors become diagnostics: rule names become words, rules a
//! user never writes (white space, comments) are dropped, and the message says what came
//! before the error ("expected a state name after `->`").

use pest::error::{Error, ErrorVariant, InputLocation};

use crate::diagnostic::{did_you_mean, Code, Diagnostic, Span};
use crate::parser::Rule;

/// Converts a pest error from parsing a piece found at absolute offset `base` of `source`.
pub(crate) fn from_pest(error: &Error<Rule>, base: usize, source: &str) -> Diagnostic {
    let local = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let pos = (base + local).min(source.len());
    if let Some(d) = unterminated(source, pos) {
        return d;
    }
    let positives: &[Rule] = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives,
        ErrorVariant::CustomError { .. } => &[],
    };
    let expected = describe_expected(positives);
    let found = found_at(source, pos);
    let next_char = source[pos..].chars().next().map_or(0, char::len_utf8);
    let found_span = Span::new(pos, pos + found.len().max(next_char));
    let before = previous_token(source, pos);

    let mut message = if expected.is_empty() {
        "this is not valid here".to_string()
    } else {
        format!("expected {}", join_or(&expected))
    };
    if let Some(b) = &before {
        message.push_str(&format!(" after `{b}`"));
    }
    let label = if found.is_empty() && pos >= source.len() {
        "the file ends here".to_string()
    } else if let Some(c) = source[pos..]
        .chars()
        .next()
        .filter(|c| c.is_whitespace() || c.is_control())
    {
        format!(
            "an invisible character (U+{:04X}) here: use a plain space or line break",
            u32::from(c)
        )
    } else if found.is_empty() {
        "unexpected here".to_string()
    } else {
        format!("found `{}`", shorten(found))
    };
    let help = help_for(positives, found, before.as_deref());
    let code = match &help {
        Some(h) if h.starts_with("keywords are lower case") => Code::NameCase,
        _ => Code::Syntax,
    };
    let mut d = Diagnostic::error(code, message).label(found_span, label);
    if let Some(help) = help {
        d = d.help(help);
    }
    d
}

/// Where a string or regex is opened at `pos` and never closed, says so plainly.
fn unterminated(source: &str, pos: usize) -> Option<Diagnostic> {
    // `"""` never closed: pest reads `""` as an empty string and fails at the third quote.
    let pos = if source[..pos].ends_with("\"\"") && source[pos..].starts_with('"') {
        pos - 2
    } else {
        pos
    };
    let rest = &source[pos..];
    if let Some(after) = rest.strip_prefix("\"\"\"") {
        if after.contains("\"\"\"") {
            return None;
        }
        return Some(
            Diagnostic::error(
                Code::UnterminatedString,
                "this `\"\"\"` string is never closed",
            )
            .label(Span::new(pos, pos + 3), "opened here")
            .help("end the text with `\"\"\"`"),
        );
    }
    let (quote, what, help) = match rest.chars().next()? {
        '"' => (
            '"',
            "string",
            "end the text with `\"` on the same line, or use `\"\"\"` for text over several lines",
        ),
        '/' => (
            '/',
            "regular expression",
            "end the pattern with `/` on the same line; write `\\/` for a slash inside it",
        ),
        _ => return None,
    };
    let line = rest.lines().next().unwrap_or("");
    let mut escaped = false;
    for c in line.chars().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == quote && !escaped => return None,
            _ => escaped = false,
        }
    }
    let code = if quote == '"' {
        Code::UnterminatedString
    } else {
        Code::Syntax
    };
    Some(
        Diagnostic::error(code, format!("this {what} is never closed"))
            .label(
                Span::new(pos, pos + line.len()),
                format!("the {what} starts here and the line ends"),
            )
            .help(help),
    )
}

/// Words for the rules pest expected, without repeats, grouped where a list would be long.
fn describe_expected(positives: &[Rule]) -> Vec<String> {
    let actions = positives.iter().filter(|r| is_entry_action(**r)).count();
    let headers = positives.iter().filter(|r| is_header(**r)).count();
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    let mut ordered = positives.to_vec();
    ordered.sort_by_key(|r| rank(*r));
    for rule in ordered {
        if actions >= 3 && (is_entry_action(rule) || rule == Rule::arrow) {
            push("an action (`send`, `ask`, `handoff`, `->`, …)".into());
        } else if headers >= 3 && is_header(rule) {
            push("a flow setting (`title`, `start on`, `priority`, …)".into());
        } else if let Some(words) = describe(rule) {
            push(words.to_string());
        }
    }
    out
}

/// Order in which expected things are listed: what a user most likely meant first, the
/// closing brace and the end of the file last.
fn rank(rule: Rule) -> u8 {
    match rule {
        r if is_entry_action(r) => 0,
        Rule::kw_on | Rule::kw_after => 1,
        Rule::state_decl | Rule::kw_state => 2,
        r if is_header(r) => 3,
        Rule::close_brace | Rule::close_paren => 8,
        Rule::EOI => 9,
        _ => 5,
    }
}

fn is_entry_action(rule: Rule) -> bool {
    use Rule::*;
    matches!(
        rule,
        kw_send
            | kw_reply
            | kw_hide
            | kw_review
            | kw_ask
            | kw_set
            | kw_tag
            | kw_emit
            | kw_handoff
            | kw_end
    )
}

fn is_header(rule: Rule) -> bool {
    use Rule::*;
    matches!(
        rule,
        kw_title
            | kw_version
            | kw_reentry
            | kw_purpose
            | kw_channels
            | kw_start
            | kw_priority
            | kw_expire
            | kw_rollout
            | kw_halt
            | kw_goal
    )
}

/// A rule in words, or `None` for rules that are not worth naming.
fn describe(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        name => "a name",
        target => "a state name",
        queue => "a queue name",
        event_name => "an event name such as `order.placed`",
        token_path => "a token name such as `event.total`",
        string | plain_string | triple_string => "a quoted text",
        integer => "a whole number",
        number => "a number",
        duration => "a duration such as `24h`",
        percent => "a percentage such as `25%`",
        reply_subject | comment_subject | event_subject | agent_subject => {
            "`reply`, `comment`, `event` or `agent`"
        }
        regex => "a pattern between slashes, such as `/^\\d+$/`",
        arrow => "`->`",
        open_brace => "`{`",
        close_brace => "`}`",
        open_paren => "`(`",
        close_paren => "`)`",
        equals => "`=`",
        colon => "`:`",
        comma => "`,`",
        compare_op => "a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
        pattern | exact_pattern => {
            "what to match (a quoted text, `contains`, `matches`, `intent`, `sentiment` or `any`)"
        }
        condition | and_cond | not_cond | comparison => {
            "a condition such as `channel == \"whatsapp\"`"
        }
        flow_decl | kw_flow => "`flow`",
        state_decl | kw_state => "`state`",
        variants => "`one of`",
        expect_clause => "`expect`",
        retry_clause => "`retry`",
        or_template => "`or template`",
        with_pairs => "`with`",
        when_clause => "`when`",
        guard => "a guard such as `opt_out_rate > 2%`",
        EOI => "the end of the file",
        kw_title => "`title`",
        kw_version => "`version`",
        kw_reentry => "`reentry`",
        kw_purpose => "`purpose`",
        kw_channels => "`channels`",
        kw_start => "`start on`",
        kw_priority => "`priority`",
        kw_expire => "`expire after`",
        kw_rollout => "`rollout`",
        kw_halt => "`halt when`",
        kw_goal => "`goal`",
        kw_on => "`on`",
        kw_after => "`after`",
        kw_every => "`every`",
        kw_within => "`within`",
        kw_approve => "`approve`",
        kw_by => "`by`",
        approve_clause => "`approve by QUEUE`",
        kw_when => "`when`",
        kw_runs => "`runs`",
        kw_message => "`message`",
        kw_comment => "`comment`",
        kw_event => "`event`",
        kw_reply => "`reply`",
        kw_agent => "`agent`",
        kw_send => "`send`",
        kw_one => "`one of`",
        kw_of => "`of`",
        kw_template => "`template`",
        kw_with => "`with`",
        kw_hide => "`hide`",
        kw_review => "`review`",
        kw_ask => "`ask`",
        kw_expect => "`expect`",
        kw_retry => "`retry`",
        kw_then => "`then`",
        kw_else => "`else`",
        kw_set => "`set`",
        kw_tag => "`tag`",
        kw_emit => "`emit`",
        kw_handoff => "`handoff`",
        kw_summary => "`summary`",
        kw_sla => "`sla`",
        kw_end => "`end`",
        kw_contains => "`contains`",
        kw_matches => "`matches`",
        kw_intent => "`intent`",
        kw_sentiment => "`sentiment`",
        kw_any => "`any`",
        kw_and => "`and`",
        kw_or => "`or`",
        kw_not => "`not`",
        kw_has => "`has`",
        kw_choice => "`choice`",
        _ => return None,
    })
}

/// A help line for common slips: a keyword in the wrong case or misspelt, a missing `->`.
fn help_for(positives: &[Rule], found: &str, before: Option<&str>) -> Option<String> {
    let keywords: Vec<&str> = positives
        .iter()
        .filter_map(|r| describe(*r))
        .filter(|w| w.starts_with('`') && w.ends_with('`') && !w.contains(' '))
        .map(|w| w.trim_matches('`'))
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    if !found.is_empty() && found.chars().all(|c| c.is_ascii_alphabetic()) {
        let lower = found.to_ascii_lowercase();
        if found != lower && keywords.contains(&lower.as_str()) {
            return Some(format!("keywords are lower case: write `{lower}`"));
        }
        if let Some(s) = did_you_mean(found, keywords.iter().copied()) {
            return Some(format!("did you mean `{s}`?"));
        }
    }
    if let Some(c) = found.chars().next() {
        match c {
            '“' | '”' | '„' => {
                return Some("use straight double quotes `\"` around text, not curly ones".into())
            }
            '\'' | '‘' | '’' => {
                return Some("text goes between double quotes: `\"like this\"`".into())
            }
            '=' if positives.contains(&Rule::compare_op) => {
                return Some("to compare, write `==`".into())
            }
            c if !c.is_ascii() && c.is_alphabetic() => {
                return Some("names use only the letters a-z, digits and `_`".into())
            }
            _ => {}
        }
    }
    if positives.contains(&Rule::arrow) && !positives.contains(&Rule::comma) {
        return Some("a transition ends with `-> STATE`, naming the state to go to".into());
    }
    if positives.contains(&Rule::target) {
        return Some("name the state to go to, e.g. `-> done`; to finish the run, write the action `end` instead".into());
    }
    if positives.contains(&Rule::kw_then) {
        return Some("an `ask` ends with `then -> STATE` (and optionally `else -> STATE`)".into());
    }
    if found.starts_with('-') && positives.contains(&Rule::duration) {
        return Some("durations are positive: a whole number and a unit, such as `24h`".into());
    }
    if positives.contains(&Rule::queue) {
        return Some("name the queue that takes the conversation, e.g. `handoff support`; queues are listed in rapport.yaml".into());
    }
    if positives.contains(&Rule::comma) && !positives.contains(&Rule::arrow) {
        return Some("separate the items of a list with commas: `whatsapp, instagram`".into());
    }
    if positives.contains(&Rule::arrow) {
        return Some(
            "a transition ends with `-> STATE`; separate several texts with commas".into(),
        );
    }
    if before == Some("{") || positives.contains(&Rule::close_brace) {
        return Some("check the spelling, and that every `{` has its `}`".into());
    }
    Some("compare this line with the form of the statement in docs/language.md".into())
}

/// The word or symbol at `pos` (empty at the end of the file).
fn found_at(source: &str, pos: usize) -> &str {
    let rest = &source[pos..];
    let word_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '%'))
        .unwrap_or(rest.len());
    if word_len > 0 {
        return &rest[..word_len];
    }
    match rest.chars().next() {
        Some(c) if c.is_whitespace() => "",
        Some('"') => {
            // The string itself, when it closes on this line.
            let line = rest.lines().next().unwrap_or(rest);
            match line[1..].find('"') {
                Some(e) => &rest[..e + 2],
                None => "\"",
            }
        }
        Some(c) => {
            if rest.starts_with("->") {
                "->"
            } else {
                &rest[..c.len_utf8()]
            }
        }
        None => "",
    }
}

/// The word or symbol just before `pos`, skipping white space and comments.
fn previous_token(source: &str, pos: usize) -> Option<String> {
    let mut before = &source[..pos];
    loop {
        before = before.trim_end();
        // A comment ends at the line end; if the last line has `#` outside a string, cut it.
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line = &before[line_start..];
        match comment_start(line) {
            Some(c) => before = &before[..line_start + c],
            None => break,
        }
    }
    let last = before.chars().last()?;
    if last == '"' {
        // The whole string when it is short and on one line, else an ellipsis.
        let line = &before[before.rfind('\n').map(|i| i + 1).unwrap_or(0)..];
        let open = line[..line.len() - 1].rfind('"');
        return Some(match open {
            Some(o) if line.len() - o <= 24 => line[o..].to_string(),
            _ => "\"…\"".into(),
        });
    }
    if last.is_alphanumeric() || last == '_' || last == '%' {
        // Just after the last character that is not part of the word (it may be wide).
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.' || *c == '%'))
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        return Some(before[start..].to_string());
    }
    if before.ends_with("->") {
        return Some("->".into());
    }
    Some(last.to_string())
}

/// Byte index of a `#` that starts a comment in `line`, ignoring `#` inside strings.
pub(crate) fn comment_start(line: &str) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            '\\' if in_string && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => in_string = !in_string,
            '#' if !in_string => return Some(i),
            _ => {}
        }
        escaped = false;
    }
    None
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 30 {
        let cut: String = s.chars().take(30).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}
