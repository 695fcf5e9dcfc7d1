//! Dockerfiles: the parser and the variable substitution of `berth image build`.
//!
//! ```text
//!  text ──parse──▶ [Instruction {line, keyword, flags, args (raw)}]
//!                        │ at build time, with the ENV/ARG values in scope
//!                        └──Instruction::resolve──▶ Step (substituted, structured)
//! ```
//!
//! Parsing is line-oriented as in Docker's classic parser: `\` at the end of a line continues
//! it, lines starting with `#` are comments (also inside a continuation), blank lines are
//! skipped. Substitution (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`, `\$`, no
//! substitution inside single quotes) needs the values of the build, so it happens in
//! [`Instruction::resolve`], and only for the instructions Docker substitutes in (not RUN,
//! CMD, ENTRYPOINT: their shell does). Every error names the Dockerfile line.

use std::collections::BTreeMap;

/// A Dockerfile error, naming the (1-based) line of the instruction it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile:{line}: {message}")]
pub struct DockerfileError {
    pub line: usize,
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> DockerfileError {
    DockerfileError {
        line,
        message: message.into(),
    }
}

/// The instructions berth builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    From,
    Copy,
    Add,
    Run,
    Env,
    Arg,
    Workdir,
    User,
    Cmd,
    Entrypoint,
    Expose,
    Label,
    StopSignal,
    Volume,
}

impl Keyword {
    fn parse(word: &str) -> Option<Keyword> {
        Some(match word.to_ascii_uppercase().as_str() {
            "FROM" => Keyword::From,
            "COPY" => Keyword::Copy,
            "ADD" => Keyword::Add,
            "RUN" => Keyword::Run,
            "ENV" => Keyword::Env,
            "ARG" => Keyword::Arg,
            "WORKDIR" => Keyword::Workdir,
            "USER" => Keyword::User,
            "CMD" => Keyword::Cmd,
            "ENTRYPOINT" => Keyword::Entrypoint,
            "EXPOSE" => Keyword::Expose,
            "LABEL" => Keyword::Label,
            "STOPSIGNAL" => Keyword::StopSignal,
            "VOLUME" => Keyword::Volume,
            _ => return None,
        })
    }

    /// The instruction as Dockerfiles spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::From => "FROM",
            Keyword::Copy => "COPY",
            Keyword::Add => "ADD",
            Keyword::Run => "RUN",
            Keyword::Env => "ENV",
            Keyword::Arg => "ARG",
            Keyword::Workdir => "WORKDIR",
            Keyword::User => "USER",
            Keyword::Cmd => "CMD",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Expose => "EXPOSE",
            Keyword::Label => "LABEL",
            Keyword::StopSignal => "STOPSIGNAL",
            Keyword::Volume => "VOLUME",
        }
    }
}

/// Instructions Docker has and berth refuses, so the error says "not supported" rather
/// than "unknown".
const UNSUPPORTED: [&str; 4] = ["HEALTHCHECK", "ONBUILD", "SHELL", "MAINTAINER"];

/// One instruction as written: substitution has not happened yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The 1-based line the instruction starts on.
    pub line: usize,
    pub keyword: Keyword,
    /// `--name=value` flags (COPY/ADD `--chown`), in order.
    pub flags: Vec<(String, String)>,
    /// The rest of the instruction, continuation lines joined, comments removed.
    pub args: String,
}

/// A command of RUN, CMD or ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandForm {
    /// `["executable", "arg"]`: run as is.
    Exec(Vec<String>),
    /// Anything else: run through `/bin/sh -c`.
    Shell(String),
}

impl CommandForm {
    /// The argv it runs.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandForm::Exec(argv) => argv.clone(),
            CommandForm::Shell(command) => {
                vec!["/bin/sh".into(), "-c".into(), command.clone()]
            }
        }
    }
}

/// An instruction with its variables substituted, ready to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    From {
        image: String,
    },
    /// COPY (`archive: false`) or ADD (`archive: true`: local tar archives are extracted).
    Copy {
        sources: Vec<String>,
        dest: String,
        /// `--chown=uid[:gid]`, numeric.
        chown: Option<(u32, u32)>,
        archive: bool,
    },
    Run(CommandForm),
    Env(Vec<(String, String)>),
    Arg {
        name: String,
        default: Option<String>,
    },
    Workdir(String),
    User(String),
    Cmd(CommandForm),
    Entrypoint(CommandForm),
    /// `PORT/proto`, proto defaulting to tcp.
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
    StopSignal(String),
    Volume(Vec<String>),
}

impl Step {
    /// A canonical one-line rendering: what the history shows and the cache key hashes.
    pub fn describe(&self) -> String {
        let json = |v: &Vec<String>| serde_json::to_string(v).expect("strings serialize");
        let form = |f: &CommandForm| match f {
            CommandForm::Exec(argv) => json(argv),
            CommandForm::Shell(command) => command.clone(),
        };
        let pairs = |p: &Vec<(String, String)>| {
            p.iter()
                .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).expect("a string")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Step::From { image } => format!("FROM {image}"),
            Step::Copy {
                sources,
                dest,
                chown,
                archive,
            } => {
                let chown = chown
                    .map(|(u, g)| format!("--chown={u}:{g} "))
                    .unwrap_or_default();
                let keyword = if *archive { "ADD" } else { "COPY" };
                format!("{keyword} {chown}{} {}", json(sources), dest)
            }
            Step::Run(f) => format!("RUN {}", form(f)),
            Step::Env(p) => format!("ENV {}", pairs(p)),
            Step::Arg { name, default } => match default {
                Some(d) => format!("ARG {name}={d}"),
                None => format!("ARG {name}"),
            },
            Step::Workdir(dir) => format!("WORKDIR {dir}"),
            Step::User(user) => format!("USER {user}"),
            Step::Cmd(f) => format!("CMD {}", form(f)),
            Step::Entrypoint(f) => format!("ENTRYPOINT {}", form(f)),
            Step::Expose(ports) => format!("EXPOSE {}", ports.join(" ")),
            Step::Label(p) => format!("LABEL {}", pairs(p)),
            Step::StopSignal(s) => format!("STOPSIGNAL {s}"),
            Step::Volume(v) => format!("VOLUME {}", json(v)),
        }
    }
}

/// Parse a Dockerfile into its instructions. Every instruction is also resolved once with
/// no variables set, so malformed arguments are reported before anything is built.
pub fn parse(text: &str) -> Result<Vec<Instruction>, DockerfileError> {
    let mut instructions = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim();
        // Comments and blank lines, also inside a continuation, are skipped.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (continues, body) = match raw.trim_end().strip_suffix('\\') {
            Some(body) => (true, body),
            None => (false, raw.trim_end()),
        };
        let (start, mut joined) = pending.take().unwrap_or((number, String::new()));
        joined.push_str(if joined.is_empty() {
            body.trim_start()
        } else {
            body
        });
        if continues {
            pending = Some((start, joined));
        } else {
            instructions.push(instruction(start, &joined)?);
        }
    }
    if let Some((start, joined)) = pending {
        // A continuation at the end of the file ends the instruction, as Docker does.
        instructions.push(instruction(start, &joined)?);
    }
    check(&instructions)?;
    Ok(instructions)
}

fn instruction(line: usize, text: &str) -> Result<Instruction, DockerfileError> {
    let (word, rest) = match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    };
    let upper = word.to_ascii_uppercase();
    let Some(keyword) = Keyword::parse(word) else {
        if UNSUPPORTED.contains(&upper.as_str()) {
            return Err(error(line, format!("{upper} is not supported")));
        }
        return Err(error(line, format!("unknown instruction {word}")));
    };
    let mut flags = Vec::new();
    let mut args = rest;
    if matches!(keyword, Keyword::Copy | Keyword::Add) {
        while let Some(flag) = args.strip_prefix("--") {
            let (flag, rest) = flag
                .split_once(char::is_whitespace)
                .map_or((flag, ""), |(f, r)| (f, r.trim_start()));
            let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
            flags.push((name.to_owned(), value.to_owned()));
            args = rest;
        }
        if args.starts_with("<<") {
            return Err(error(
                line,
                format!("{upper} with a heredoc is not supported"),
            ));
        }
    }
    if keyword == Keyword::Run && args.starts_with("<<") {
        return Err(error(line, "RUN with a heredoc is not supported"));
    }
    if keyword == Keyword::Run && args.starts_with("--") {
        return Err(error(
            line,
            "RUN flags (--mount, --network) are not supported",
        ));
    }
    Ok(Instruction {
        line,
        keyword,
        flags,
        args: args.to_owned(),
    })
}

/// Whole-file rules: one FROM, first (after ARGs); every instruction well-formed with the
/// variables it declares (ARGs without a default, and build args, stand in as `x`).
fn check(instructions: &[Instruction]) -> Result<(), DockerfileError> {
    let mut from_seen = false;
    let mut vars = BTreeMap::new();
    for instruction in instructions {
        match instruction.keyword {
            Keyword::From if from_seen => {
                return Err(error(
                    instruction.line,
                    "a second FROM (multi-stage builds) is not supported",
                ))
            }
            Keyword::From => from_seen = true,
            Keyword::Arg => {}
            other if !from_seen => {
                return Err(error(
                    instruction.line,
                    format!(
                        "{} before FROM: the Dockerfile must start with FROM (ARGs may precede it)",
                        other.as_str()
                    ),
                ))
            }
            _ => {}
        }
        match instruction.resolve(&vars)? {
            Step::Arg { name, default } => {
                vars.insert(name, default.unwrap_or_else(|| "x".into()));
            }
            Step::Env(pairs) => vars.extend(pairs),
            _ => {}
        }
    }
    if !from_seen {
        return Err(error(
            instructions.last().map_or(1, |i| i.line),
            "no FROM instruction",
        ));
    }
    Ok(())
}

impl Instruction {
    /// Substitute `vars` (ENV and ARG values in scope) where Docker does and parse the
    /// arguments of this instruction.
    pub fn resolve(&self, vars: &BTreeMap<String, String>) -> Result<Step, DockerfileError> {
        let line = self.line;
        let words = || words(&self.args, vars, line);
        let for_flags = |allowed: &[&str]| -> Result<(), DockerfileError> {
            for (name, _) in &self.flags {
                if !allowed.contains(&name.as_str()) {
                    let what = if name == "from" {
                        "--from (multi-stage builds) is not supported".to_owned()
                    } else {
                        format!("{} --{name} is not supported", self.keyword.as_str())
                    };
                    return Err(error(line, what));
                }
            }
            Ok(())
        };
        let one = |what: &str| -> Result<String, DockerfileError> {
            let mut w = words()?;
            if w.len() != 1 {
                return Err(error(
                    line,
                    format!("{} takes exactly one {what}", self.keyword.as_str()),
                ));
            }
            Ok(w.remove(0))
        };
        Ok(match self.keyword {
            Keyword::From => {
                let w = words()?;
                match w.as_slice() {
                    [image] => Step::From {
                        image: image.clone(),
                    },
                    [_, as_, _] if as_.eq_ignore_ascii_case("as") => {
                        return Err(error(
                            line,
                            "FROM ... AS (multi-stage builds) is not supported",
                        ))
                    }
                    _ => return Err(error(line, "FROM takes one image name")),
                }
            }
            Keyword::Copy | Keyword::Add => {
                for_flags(&["chown"])?;
                let chown = self
                    .flags
                    .iter()
                    .find(|(name, _)| name == "chown")
                    .map(|(_, value)| chown(&substitute(value, vars, line)?, line))
                    .transpose()?;
                let mut w = match parse_json_array(&self.args) {
                    Some(list) => list,
                    None => words()?,
                };
                if w.len() < 2 {
                    return Err(error(
                        line,
                        format!(
                            "{} needs at least one source and a destination",
                            self.keyword.as_str()
                        ),
                    ));
                }
                let dest = w.pop().expect("two or more");
                if let Some(url) = w.iter().find(|s| s.contains("://")) {
                    return Err(error(
                        line,
                        format!(
                            "{} of a URL ({url}) is not supported: only local files",
                            self.keyword.as_str()
                        ),
                    ));
                }
                Step::Copy {
                    sources: w,
                    dest,
                    chown,
                    archive: self.keyword == Keyword::Add,
                }
            }
            Keyword::Run => Step::Run(self.command_form()?),
            Keyword::Cmd => Step::Cmd(self.command_form()?),
            Keyword::Entrypoint => Step::Entrypoint(self.command_form()?),
            Keyword::Env => Step::Env(self.pairs(vars, true)?),
            Keyword::Label => Step::Label(self.pairs(vars, false)?),
            Keyword::Arg => {
                // ARG's default is substituted; the name is not.
                let (name, default) = match self.args.split_once('=') {
                    Some((name, default)) => {
                        let default = words_keep_empty(default, vars, line)?;
                        (name.trim().to_owned(), Some(default.concat()))
                    }
                    None => (self.args.trim().to_owned(), None),
                };
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(error(line, "ARG takes one NAME[=default]"));
                }
                Step::Arg { name, default }
            }
            Keyword::Workdir => Step::Workdir(one("directory")?),
            Keyword::User => Step::User(one("user")?),
            Keyword::StopSignal => Step::StopSignal(one("signal")?),
            Keyword::Expose => {
                let ports = words()?;
                if ports.is_empty() {
                    return Err(error(line, "EXPOSE needs a port"));
                }
                let ports = ports
                    .into_iter()
                    .map(|p| expose(&p, line))
                    .collect::<Result<Vec<_>, _>>()?;
                Step::Expose(ports)
            }
            Keyword::Volume => {
                let volumes = match parse_json_array(&self.args) {
                    Some(list) => list,
                    None => words()?,
                };
                if volumes.is_empty() {
                    return Err(error(line, "VOLUME needs a path"));
                }
                Step::Volume(volumes)
            }
        })
    }

    fn command_form(&self) -> Result<CommandForm, DockerfileError> {
        if let Some(argv) = parse_json_array(&self.args) {
            if argv.is_empty() {
                return Err(error(
                    self.line,
                    format!("{} needs a command", self.keyword.as_str()),
                ));
            }
            return Ok(CommandForm::Exec(argv));
        }
        if self.args.is_empty() {
            return Err(error(
                self.line,
                format!("{} needs a command", self.keyword.as_str()),
            ));
        }
        Ok(CommandForm::Shell(self.args.clone()))
    }

    /// `K=V K2="v 2"`, or ENV's legacy `K the rest`.
    fn pairs(
        &self,
        vars: &BTreeMap<String, String>,
        legacy: bool,
    ) -> Result<Vec<(String, String)>, DockerfileError> {
        let line = self.line;
        let name = self.keyword.as_str();
        let first = self.args.split_whitespace().next().unwrap_or_default();
        if first.is_empty() {
            return Err(error(line, format!("{name} needs KEY=value")));
        }
        if legacy && !first.contains('=') {
            let value = self.args[first.len()..].trim();
            let value = words_keep_empty(value, vars, line)?.join(" ");
            return Ok(vec![(first.to_owned(), value)]);
        }
        // The key is taken literally up to '='; the value is one word after substitution.
        let mut pairs = Vec::new();
        for word in raw_words(&self.args) {
            let Some((key, value)) = word.split_once('=') else {
                return Err(error(line, format!("{name}: {word:?} is not KEY=value")));
            };
            if key.is_empty() {
                return Err(error(line, format!("{name}: empty key in {word:?}")));
            }
            let key = words_keep_empty(key, vars, line)?.concat();
            let value = words_keep_empty(value, vars, line)?.concat();
            pairs.push((key, value));
        }
        Ok(pairs)
    }
}

fn chown(value: &str, line: usize) -> Result<(u32, u32), DockerfileError> {
    let (user, group) = value.split_once(':').unwrap_or((value, value));
    let parse = |s: &str| {
        s.parse::<u32>().map_err(|_| {
            error(
                line,
                format!("--chown={value}: only numeric uid[:gid] is supported"),
            )
        })
    };
    Ok((parse(user)?, parse(group)?))
}

fn expose(port: &str, line: usize) -> Result<String, DockerfileError> {
    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if number.parse::<u16>().is_err() || !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(error(
            line,
            format!("EXPOSE {port}: expected PORT[/tcp|udp|sctp]"),
        ));
    }
    Ok(format!("{number}/{proto}"))
}

/// A JSON array of strings (the exec form), or `None` when the text is not one.
fn parse_json_array(text: &str) -> Option<Vec<String>> {
    if !text.trim_start().starts_with('[') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The whitespace-separated words of `text`, quotes and backslashes kept (for KEY=value
/// splitting before substitution).
fn raw_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                word.push('\\');
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                continue;
            }
            _ => {}
        }
        word.push(c);
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Split `text` into words with quotes removed and variables substituted, as Docker's
/// shell-word processor does for COPY, WORKDIR, ... Empty words are dropped.
pub fn words(
    text: &str,
    vars: &BTreeMap<String, String>,
    line: usize,
) -> Result<Vec<String>, DockerfileError> {
    Ok(words_keep_empty(text, vars, line)?
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect())
}

/// [`words`] for a single value: the substituted text with its quotes removed.
pub fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    line: usize,
) -> Result<String, DockerfileError> {
    Ok(words_keep_empty(text, vars, line)?.join(" "))
}

fn words_keep_empty(
    text: &str,
    vars: &BTreeMap<String, String>,
    line: usize,
) -> Result<Vec<String>, DockerfileError> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut started = false;
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                started = true;
                match chars.next() {
                    // Inside double quotes a backslash only escapes what the shell escapes.
                    Some(next) if quote.is_none() || matches!(next, '"' | '\\' | '$') => {
                        word.push(next)
                    }
                    Some(next) => {
                        word.push('\\');
                        word.push(next);
                    }
                    None => word.push('\\'),
                }
            }
            (_, '$') => {
                started = true;
                word.push_str(&variable(&mut chars, vars, line)?);
            }
            (_, c) => {
                started = true;
                word.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err(error(line, "unterminated quote"));
    }
    if started {
        out.push(word);
    }
    Ok(out)
}

/// The value of the variable after a `$`: `NAME`, `{NAME}`, `{NAME:-default}`,
/// `{NAME:+alternative}` (also without the colon); a lone `$` stays.
fn variable(
    chars: &mut std::iter::Peekable<std::str::Chars>,
    vars: &BTreeMap<String, String>,
    line: usize,
) -> Result<String, DockerfileError> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if chars.peek() == Some(&'{') {
        chars.next();
        let mut inner = String::new();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(c) => inner.push(c),
                None => return Err(error(line, "missing '}' in a ${...} substitution")),
            }
        }
        let name_end = inner.find(|c: char| !is_name(c)).unwrap_or(inner.len());
        let (name, modifier) = inner.split_at(name_end);
        if name.is_empty() {
            return Err(error(line, format!("bad substitution ${{{inner}}}")));
        }
        let value = vars.get(name);
        let (colon, rest) = match modifier.strip_prefix(':') {
            Some(rest) => (true, rest),
            None => (false, modifier),
        };
        let set = value.is_some_and(|v| !colon || !v.is_empty());
        return match rest.chars().next() {
            None if !colon => Ok(value.cloned().unwrap_or_default()),
            Some('-') => Ok(if set {
                value.cloned().unwrap_or_default()
            } else {
                substitute(&rest[1..], vars, line)?
            }),
            Some('+') => Ok(if set {
                substitute(&rest[1..], vars, line)?
            } else {
                String::new()
            }),
            _ => Err(error(
                line,
                format!("unsupported substitution ${{{inner}}}: use ${{NAME}}, ${{NAME:-default}} or ${{NAME:+alternative}}"),
            )),
        };
    }
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if !is_name(c) {
            break;
        }
        name.push(c);
        chars.next();
    }
    if name.is_empty() {
        return Ok("$".into());
    }
    Ok(vars.get(&name).cloned().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn continuations_comments_and_lines() {
        let text = "# comment\nARG BASE=busybox\nFROM $BASE\n\nRUN echo a \\\n  # inside\n  && echo b\nCOPY --chown=1:2 a b /dst/\ncmd [\"sh\", \"-c\", \"x\"]\n";
        let parsed = parse(text).unwrap();
        let lines: Vec<_> = parsed.iter().map(|i| (i.line, i.keyword)).collect();
        assert_eq!(
            lines,
            [
                (2, Keyword::Arg),
                (3, Keyword::From),
                (5, Keyword::Run),
                (8, Keyword::Copy),
                (9, Keyword::Cmd)
            ]
        );
        assert_eq!(parsed[2].args, "echo a   && echo b");
        let empty = BTreeMap::new();
        assert_eq!(
            parsed[2].resolve(&empty).unwrap(),
            Step::Run(CommandForm::Shell("echo a   && echo b".into()))
        );
        assert_eq!(
            parsed[3].resolve(&empty).unwrap(),
            Step::Copy {
                sources: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
                chown: Some((1, 2)),
                archive: false
            }
        );
        assert_eq!(
            parsed[4].resolve(&empty).unwrap(),
            Step::Cmd(CommandForm::Exec(vec![
                "sh".into(),
                "-c".into(),
                "x".into()
            ]))
        );
        assert_eq!(
            parsed[1].resolve(&vars(&[("BASE", "busybox")])).unwrap(),
            Step::From {
                image: "busybox".into()
            }
        );
        assert_eq!(
            parsed[0].resolve(&empty).unwrap(),
            Step::Arg {
                name: "BASE".into(),
                default: Some("busybox".into())
            }
        );
    }

    #[test]
    fn shell_and_exec_forms() {
        let parsed =
            parse("FROM scratch\nENTRYPOINT [\"/app\"]\nCMD echo $HOME\nRUN [not json\n").unwrap();
        let empty = BTreeMap::new();
        assert_eq!(
            parsed[1].resolve(&empty).unwrap(),
            Step::Entrypoint(CommandForm::Exec(vec!["/app".into()]))
        );
        // RUN and CMD are not substituted: the shell does it.
        let cmd = parsed[2].resolve(&vars(&[("HOME", "/x")])).unwrap();
        assert_eq!(cmd, Step::Cmd(CommandForm::Shell("echo $HOME".into())));
        assert_eq!(
            CommandForm::Shell("echo hi".into()).argv(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            parsed[3].resolve(&empty).unwrap(),
            Step::Run(CommandForm::Shell("[not json".into()))
        );
    }

    #[test]
    fn substitution() {
        let v = vars(&[("A", "1"), ("EMPTY", ""), ("SP", "x y")]);
        let w = |t: &str| words(t, &v, 1).unwrap();
        assert_eq!(w("$A ${A}b c$A"), ["1", "1b", "c1"]);
        assert_eq!(
            w("${NOPE:-dflt} ${EMPTY:-d2} ${EMPTY-d3}x"),
            ["dflt", "d2", "x"]
        );
        assert_eq!(w("${A:+alt} ${NOPE:+alt}z"), ["alt", "z"]);
        assert_eq!(w("'$A' \"$A\" \\$A"), ["$A", "1", "$A"]);
        assert_eq!(w("$SP \"$SP\""), ["x y", "x y"]);
        assert_eq!(w("cost$ 5"), ["cost$", "5"]);
        assert!(words("${A", &v, 7)
            .unwrap_err()
            .to_string()
            .starts_with("Dockerfile:7:"));
        assert!(words("${A?x}", &v, 1).is_err());
        assert!(words("'open", &v, 1).is_err());

        let env = parse("FROM scratch\nENV G=hi X=\"a $G\" Y=${G}2\nENV OLD some value\n").unwrap();
        assert_eq!(
            env[1].resolve(&vars(&[("G", "hi")])).unwrap(),
            Step::Env(vec![
                ("G".into(), "hi".into()),
                ("X".into(), "a hi".into()),
                ("Y".into(), "hi2".into())
            ])
        );
        assert_eq!(
            env[2].resolve(&BTreeMap::new()).unwrap(),
            Step::Env(vec![("OLD".into(), "some value".into())])
        );
        let workdir = parse("FROM scratch\nWORKDIR ${BASE:-/srv}/app\n").unwrap();
        assert_eq!(
            workdir[1].resolve(&BTreeMap::new()).unwrap(),
            Step::Workdir("/srv/app".into())
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "FROM scratch\n\nHEALTHCHECK CMD true\n",
                "Dockerfile:3: HEALTHCHECK is not supported",
            ),
            (
                "FROM scratch\nONBUILD RUN x\n",
                "Dockerfile:2: ONBUILD is not supported",
            ),
            (
                "FROM scratch\nFROBNICATE\n",
                "Dockerfile:2: unknown instruction FROBNICATE",
            ),
            ("FROM a\nFROM b\n", "Dockerfile:2: a second FROM"),
            ("FROM a AS b\n", "Dockerfile:1: FROM ... AS"),
            ("FROM a\nCOPY --from=x a b\n", "Dockerfile:2: --from"),
            (
                "FROM a\nRUN <<EOF\nx\nEOF\n",
                "Dockerfile:2: RUN with a heredoc",
            ),
            ("RUN x\nFROM a\n", "Dockerfile:1: RUN before FROM"),
            ("FROM a\nCOPY one\n", "Dockerfile:2: COPY needs"),
            ("FROM a\nEXPOSE http\n", "Dockerfile:2: EXPOSE http"),
            (
                "FROM a\nCOPY --chown=app a b\n",
                "Dockerfile:2: --chown=app",
            ),
            ("FROM a\nADD http://x/y /y\n", "Dockerfile:2: ADD of a URL"),
            ("FROM a\nENV\n", "Dockerfile:2: ENV needs"),
            ("ARG X\n", "Dockerfile:1: no FROM"),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{text:?}: {message}");
        }
    }

    #[test]
    fn other_instructions_resolve() {
        let parsed = parse(
            "FROM scratch\nEXPOSE 80 53/UDP\nLABEL a=b \"c d\"=e\nUSER 1000:1000\nSTOPSIGNAL SIGTERM\nVOLUME [\"/data\"]\nADD x.tar /\n",
        )
        .unwrap();
        let r: Vec<Step> = parsed[1..]
            .iter()
            .map(|i| i.resolve(&BTreeMap::new()).unwrap())
            .collect();
        assert_eq!(r[0], Step::Expose(vec!["80/tcp".into(), "53/udp".into()]));
        assert_eq!(
            r[1],
            Step::Label(vec![("a".into(), "b".into()), ("c d".into(), "e".into())])
        );
        assert_eq!(r[2], Step::User("1000:1000".into()));
        assert_eq!(r[3], Step::StopSignal("SIGTERM".into()));
        assert_eq!(r[4], Step::Volume(vec!["/data".into()]));
        assert!(matches!(r[5], Step::Copy { archive: true, .. }));
        assert_eq!(r[5].describe(), "ADD [\"x.tar\"] /");
    }
}
