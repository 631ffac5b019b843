//! The one place that builds shell text. Shell syntax comes in as `&'static
//! str` (written in our source, never built from input); every runtime value
//! goes through [`Sh::arg`] or [`Sh::val`], which quote it for POSIX `sh`.
//! A module therefore cannot splice a user's value into a script unquoted.

use std::fmt;

/// A fragment of POSIX shell text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sh {
    text: String,
}

/// `value` quoted for POSIX sh, as one word.
#[must_use]
pub fn quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@%,".contains(&b))
    {
        return value.to_string();
    }
    // Single quotes keep every byte literal in POSIX sh; a quote inside is
    // closed, escaped and reopened. (shell-quote's output is correct too but
    // hard to read in the step labels that reports print.)
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A command line that runs a script arriving on standard input ahead of
/// a payload: `sh` reads the script line by line (the shell's `read` takes
/// one byte at a time from a pipe, so nothing of the payload is consumed)
/// up to the line `term`, then evaluates it with the payload still on its
/// standard input. The script never appears on a command line, where any
/// user of the host could read it in `/proc/*/cmdline`. Returns the
/// bootstrap (the text for `sh -c`) and the bytes to send before the
/// payload.
#[must_use]
pub fn stdin_script(script: &str) -> (String, Vec<u8>) {
    let term = (0u32..)
        .map(|n| format!("PLUMB_SCRIPT_END_{n}"))
        .find(|t| !script.lines().any(|l| l == t))
        .expect("a free terminator");
    let boot = format!(
        "plumb_s=; plumb_ok=; while IFS= read -r plumb_l; do if [ \"$plumb_l\" = {term} ]; then plumb_ok=1; break; fi; plumb_s=\"$plumb_s$plumb_l\n\"; done; if [ -z \"$plumb_ok\" ]; then echo 'plumb: the script did not arrive whole' >&2; exit 125; fi; eval \"$plumb_s\""
    );
    let mut prefix = script.as_bytes().to_vec();
    if !script.ends_with('\n') {
        prefix.push(b'\n');
    }
    prefix.extend_from_slice(term.as_bytes());
    prefix.push(b'\n');
    (boot, prefix)
}

/// The command line that runs a script sent whole on standard input (no
/// payload follows): read to the end, then evaluated with `/dev/null` as
/// standard input. Like [`stdin_script`], it keeps the script off every
/// command line.
pub const STDIN_SCRIPT_ALONE: &str = "sh -c 'plumb_script=$(cat) || exit 125; exec </dev/null; eval \"$plumb_script\"'";

impl Sh {
    /// Empty text.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Start with static shell syntax (a command name, a keyword).
    #[must_use]
    pub fn raw_start(s: &'static str) -> Self {
        Self { text: s.to_string() }
    }

    /// Append static shell syntax verbatim.
    #[must_use]
    pub fn raw(mut self, s: &'static str) -> Self {
        self.text.push_str(s);
        self
    }

    /// Append a space and `value` quoted as one word.
    #[must_use]
    pub fn arg(mut self, value: impl AsRef<str>) -> Self {
        if !self.text.is_empty() && !self.text.ends_with([' ', '\n', '=', '(']) {
            self.text.push(' ');
        }
        self.text.push_str(&quote(value.as_ref()));
        self
    }

    /// Append `value` quoted, with no space before it (`x=` + value).
    #[must_use]
    pub fn val(mut self, value: impl AsRef<str>) -> Self {
        self.text.push_str(&quote(value.as_ref()));
        self
    }

    /// Append another fragment.
    #[must_use]
    pub fn then(mut self, other: &Sh) -> Self {
        self.text.push_str(&other.text);
        self
    }

    /// Append another fragment on a new line.
    pub fn line(&mut self, other: &Sh) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
        self.text.push_str(&other.text);
        self.text.push('\n');
    }

    /// Append a quoted here-document holding `body` (` <<'TERM'`, the body,
    /// `TERM`), with a terminator that no line of `body` is: the command
    /// before it reads `body` byte for byte on its standard input (plus a
    /// final newline when `body` lacks one). Nothing else may follow on
    /// this line.
    #[must_use]
    pub fn heredoc(mut self, body: &str) -> Self {
        // `PLUMB_EOF_0`, then other first letters and numbers: a body line
        // rules a terminator out when it is the terminator, or when it starts
        // with a part of it followed by a non-ASCII byte: dash (0.5.12, and
        // Debian's /bin/sh) drops that byte while it checks for the end.
        let term = (0u32..)
            .map(|n| format!("{}LUMB_EOF_{}", char::from(b'A' + ((n + 15) % 26) as u8), n / 26))
            .find(|t| !body.split('\n').any(|l| clashes(l.as_bytes(), t.as_bytes())))
            .expect("a free terminator");
        self.text.push_str(" <<'");
        self.text.push_str(&term);
        self.text.push_str("'\n");
        self.text.push_str(body);
        if !body.ends_with('\n') {
            self.text.push('\n');
        }
        self.text.push_str(&term);
        self
    }

    /// A user's own command line (a `command` resource's `run`, a `validate`
    /// check), run in a subshell with `args` as its positional parameters:
    /// its text is the user's shell code by intent. It is evaluated from
    /// the script (which reaches the host on standard input), never passed
    /// as an argument to a new `sh -c`, so that a secret templated into it
    /// does not show in the host's process list (`/proc/*/cmdline`).
    #[must_use]
    pub fn user_command(cmd: &str, args: &[Sh]) -> Self {
        // The leading space keeps `$(` + this from reading as `$((`, an
        // arithmetic expansion.
        let mut s = Self::raw_start(" ( set --");
        for a in args {
            s.text.push(' ');
            s.text.push_str(&a.text);
        }
        s.text.push_str("; eval ");
        s.text.push_str(&quote(cmd));
        s.text.push_str(" )");
        s
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether there is no text.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// Whether a here-document line ends the document early or loses a byte
/// with terminator `term` (see [`Sh::heredoc`]).
fn clashes(line: &[u8], term: &[u8]) -> bool {
    line == term || (1..=term.len()).any(|k| line.len() > k && line[..k] == term[..k] && line[k] >= 0x80)
}

impl fmt::Display for Sh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_heredoc_body_arrives_byte_for_byte_whatever_its_lines() {
        let body = "PLUMB_EOF_0\n'$(touch /tmp/plumb-heredoc-canary)' `x` \\ $HOME\nPLUMB_EOF_1\nend";
        let s = Sh::raw_start("cat").heredoc(body);
        let out = Command::new("sh").arg("-c").arg(s.as_str()).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{body}\n"));
        assert!(!std::path::Path::new("/tmp/plumb-heredoc-canary").exists());
    }

    /// Found by the property `every_value_reaches_dash_and_bash_byte_for_byte`
    /// (tests/props.rs): dash dropped the `0xC2` of `P¡`, a line starting
    /// like the terminator `PLUMB_EOF_0` and then a non-ASCII byte.
    #[test]
    fn a_heredoc_line_starting_like_the_terminator_then_non_ascii_arrives_whole_on_dash() {
        for body in ["P¡", "PLUMB_EOF_0é", "Półka\nQé\nR€", "PLUMB_EOF_0\nP¡"] {
            let s = Sh::raw_start("cat").heredoc(body);
            for shell in ["dash", "bash"] {
                let out = Command::new(shell).arg("-c").arg(s.as_str()).output().unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    format!("{body}\n"),
                    "{shell}:\n{s}"
                );
            }
        }
        assert!(Sh::raw_start("cat").heredoc("x").as_str().ends_with("\nPLUMB_EOF_0"));
    }

    fn echo_back(v: &str) -> String {
        let s = Sh::raw_start("printf '%s'").arg(v);
        let out = Command::new("sh").arg("-c").arg(s.as_str()).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_values_reach_the_command_literally() {
        for v in [
            "$(touch /tmp/plumb-pwned)",
            "`id`",
            "a; rm -rf /",
            "it's \"quoted\"",
            "line\nbreak",
            "sp ace",
            "ünïcødé ✓",
            "-n",
            "",
            "*",
            "$HOME",
            "\\",
        ] {
            assert_eq!(echo_back(v), v);
        }
        assert!(!std::path::Path::new("/tmp/plumb-pwned").exists());
    }

    /// A user's command runs with its arguments, its exit status and its
    /// output, also inside `$(...)`, and its text reaches no command line.
    #[test]
    fn a_user_command_runs_in_a_subshell_with_its_arguments() {
        let cmd = Sh::user_command("printf '%s|' \"$1\" \"$#\"; exit 3", &[Sh::raw_start("'a b'")]);
        let s = Sh::raw_start("out=$(").then(&cmd).raw(")\necho \"rc=$? out=$out\"");
        let out = Command::new("sh").arg("-c").arg(s.as_str()).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "rc=3 out=a b|1|\n");
        assert!(!s.as_str().contains("sh -c"), "{s}");
    }

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(quote("/etc/docker/daemon.json"), "/etc/docker/daemon.json");
        assert_eq!(quote("a b"), "'a b'");
    }
}
