//! From arguments to typed configuration ("high args"): endpoints parsed, defaults that
//! depend on the transport chosen, durations of zero turned into "never", stdin read.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;

use super::args::{FramingArgs, FramingChoice, SendArgs, ServeArgs};
use crate::access::AccessPolicy;
use crate::behaviour::Responder;
use crate::behaviour::chat::ChatOptions;
use crate::behaviour::exec::{ExecSpec, check_program};
use crate::client::SendOptions;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::framing::Framing;
use crate::server::{AfterReply, Limits, ServeMode, ServeOptions};
use crate::transport::ListenOptions;

/// A validated `serve` command.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub endpoint: Endpoint,
    /// How to serve.
    pub options: ServeOptions,
}

/// A validated `send` command.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Where to send.
    pub endpoint: Endpoint,
    /// What to send and how to wait.
    pub options: SendOptions,
}

/// Zero means "no limit" for timeouts given on the command line.
fn optional(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// The framing rule and read size chosen by the shared flags.
fn framing(args: &FramingArgs) -> Result<(Framing, usize)> {
    let buffer =
        usize::try_from(args.buffer).map_err(|_| Error::Usage("--buffer is too large".into()))?;
    let max_len = usize::try_from(args.max_line)
        .map_err(|_| Error::Usage("--max-line is too large".into()))?;
    let framing = match args.framing {
        FramingChoice::Raw => Framing::Raw,
        FramingChoice::Line => Framing::Line { max_len },
    };
    Ok((framing, buffer))
}

impl ServeArgs {
    /// Parses the endpoint and settles every default.
    ///
    /// # Errors
    /// [`Error::Endpoint`] for a malformed endpoint, [`Error::Usage`] for values that
    /// do not fit.
    pub fn into_config(self) -> Result<ServeConfig> {
        let endpoint: Endpoint = self.endpoint.parse()?;
        let (framing, buffer_size) = framing(&self.framing)?;
        let mode = serve_mode(&self, framing)?;
        let responder = if self.echo {
            Responder::Echo
        } else if self.discard {
            Responder::Discard
        } else if let Some(text) = self.reply {
            Responder::Reply(Bytes::from(text))
        } else {
            Responder::seed_reply(endpoint.seed_word())
        };
        let max_conns = self
            .max_conns
            .map(|n| {
                usize::try_from(n).map_err(|_| Error::Usage("--max-conns is too large".into()))
            })
            .transpose()?;
        let options = ServeOptions {
            mode,
            responder,
            access: AccessPolicy::new(self.allow, self.deny),
            framing,
            buffer_size,
            after_reply: if self.close {
                AfterReply::Close
            } else {
                AfterReply::KeepOpen
            },
            limits: Limits {
                max_conns,
                over_limit: self.max_conns_mode,
                idle_timeout: optional(self.idle_timeout),
                message_timeout: optional(self.message_timeout),
                grace: self.grace,
            },
            listen: ListenOptions {
                backlog: self.backlog,
                ..ListenOptions::default()
            },
        };
        Ok(ServeConfig { endpoint, options })
    }
}

/// The connection behaviour chosen by `--exec`, `--sh-exec` or `--chat` (default: answer
/// each message).
fn serve_mode(args: &ServeArgs, framing: Framing) -> Result<ServeMode> {
    if let Some(words) = &args.exec {
        let Some((program, rest)) = words.split_first() else {
            return Err(Error::Usage("--exec needs a program to run".into()));
        };
        check_program(program).map_err(Error::Usage)?;
        let mut spec = ExecSpec::program(program.clone(), rest.to_vec());
        spec.stderr = args.exec_stderr;
        return Ok(ServeMode::Exec(spec));
    }
    if let Some(command) = &args.sh_exec {
        let mut spec = ExecSpec::shell(command.clone());
        spec.stderr = args.exec_stderr;
        return Ok(ServeMode::Exec(spec));
    }
    if args.chat {
        let max_line = match framing {
            Framing::Line { max_len } => max_len,
            Framing::Raw => usize::try_from(args.framing.max_line)
                .map_err(|_| Error::Usage("--max-line is too large".into()))?,
        };
        return Ok(ServeMode::Chat(ChatOptions {
            max_line,
            ..ChatOptions::default()
        }));
    }
    Ok(ServeMode::Respond)
}

impl SendArgs {
    /// Parses the endpoint and reads the message (from stdin for "-").
    ///
    /// # Errors
    /// [`Error::Endpoint`] for a malformed endpoint, [`Error::Io`] if stdin cannot be read.
    pub fn into_config(self) -> Result<SendConfig> {
        let endpoint: Endpoint = self.endpoint.parse()?;
        let (framing, buffer_size) = framing(&self.framing)?;
        let mut options = SendOptions::seed(&endpoint);
        match self.message.as_deref() {
            Some("-") => {
                let mut message = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut message)
                    .map_err(|source| Error::Io {
                        doing: "reading the message from stdin".into(),
                        source,
                    })?;
                options.message = Bytes::from(message);
            }
            Some(text) => options.message = Bytes::from(text.to_string()),
            None => {}
        }
        options.count = self.count;
        options.timeout = self.timeout;
        options.framing = framing;
        options.buffer_size = buffer_size;
        if options.timeout.is_zero() {
            return Err(Error::Usage("--timeout must be more than 0".into()));
        }
        Ok(SendConfig { endpoint, options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn serve(args: &[&str]) -> Result<ServeConfig> {
        let mut argv = vec!["sockit", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Serve(serve)) => serve.into_config(),
            other => panic!("not a serve command: {other:?}"),
        }
    }

    #[test]
    fn udp_defaults_to_the_notes_udp_reply() -> Result<()> {
        let config = serve(&["udp"])?;
        assert_eq!(config.options.responder, Responder::seed_reply("udp"));
        assert_eq!(config.endpoint.to_string(), "udp://127.0.0.1:8000");
        Ok(())
    }

    #[test]
    fn zero_timeouts_mean_never() -> Result<()> {
        let config = serve(&["--idle-timeout", "0", "--close", "--framing", "line"])?;
        assert_eq!(config.options.limits.idle_timeout, None);
        assert_eq!(config.options.after_reply, AfterReply::Close);
        assert_eq!(config.options.framing, Framing::Line { max_len: 65536 });
        Ok(())
    }

    #[test]
    fn exec_chat_and_access_reach_the_options() -> Result<()> {
        let config = serve(&[
            "--max-conns",
            "3",
            "--max-conns-mode",
            "refuse",
            "--deny",
            "10.0.0.0/8",
            "--exec",
            "cat",
            "-n",
        ])?;
        assert_eq!(
            config.options.mode,
            ServeMode::Exec(ExecSpec::program("cat".into(), vec!["-n".into()]))
        );
        assert_eq!(config.options.limits.max_conns, Some(3));
        assert_eq!(
            config.options.limits.over_limit,
            crate::server::OverLimit::Refuse
        );
        assert!(
            !config
                .options
                .access
                .check_ip([10, 1, 1, 1].into())
                .is_allowed()
        );
        let config = serve(&["--chat", "--max-line", "80"])?;
        assert_eq!(
            config.options.mode,
            ServeMode::Chat(ChatOptions {
                max_line: 80,
                ..ChatOptions::default()
            })
        );
        Ok(())
    }

    #[test]
    fn a_missing_program_is_a_usage_error() {
        match serve(&["--exec", "sockit-no-such-program"]) {
            Err(e) => {
                assert_eq!(e.exit_status() as u8, 2);
                assert!(e.to_string().contains("not found in PATH"), "{e}");
            }
            Ok(c) => panic!("accepted {c:?}"),
        }
    }

    #[test]
    fn malformed_endpoint_is_a_usage_error() {
        match serve(&["tcp://nowhere"]) {
            Err(e) => assert_eq!(e.exit_status() as u8, 2),
            Ok(c) => panic!("accepted {c:?}"),
        }
    }
}
