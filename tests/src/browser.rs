//! Headless Chromium driven over the Chrome DevTools Protocol, for tests of
//! the web console in a real browser.
//!
//! The protocol goes over `--remote-debugging-pipe`: Chromium reads
//! commands from fd 3 and writes answers to fd 4, each a JSON message ended
//! by a NUL byte. A shell `exec` maps those fds onto the child's stdin and
//! stdout, so no port is opened and no WebSocket client is needed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Debian's Chromium (what CI installs), or another Chromium on this machine.
pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|b| {
        ["/usr/bin", "/usr/local/bin"]
            .iter()
            .map(|d| PathBuf::from(d).join(b))
            .find(|p| p.exists())
    })
}

/// Chromium's binary; None, with the reason printed, when none is
/// installed outside CI. Under `CI=true` a missing Chromium fails the test.
pub fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed and CI=true forbids skipping (install Debian's chromium)"
        );
        eprintln!("skipping: chromium is not installed");
    }
    found
}

/// A headless Chromium with one page; killed and reaped on drop.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `binary` headless with a fresh profile and opens a blank page.
    pub async fn start(binary: &std::path::Path) -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            "--remote-debugging-pipe",
        ];
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null")
            .arg(binary)
            .args(args)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?);
        let mut b = Browser {
            child,
            stdin,
            stdout,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = b
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        b.session = attached["sessionId"].as_str().unwrap_or_default().to_string();
        b.call(Some(()), "Page.enable", json!({})).await?;
        Ok(b)
    }

    /// Sends one command (to the page when `page` is Some) and waits at most
    /// 20 s for its answer; events in between are skipped.
    async fn call(&mut self, page: Option<()>, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if page.is_some() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.stdin.write_all(&bytes).await?;
        self.stdin.flush().await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut buf = Vec::new();
            let n = tokio::time::timeout(left, self.stdout.read_until(0, &mut buf))
                .await
                .map_err(|_| anyhow::anyhow!("chromium: no answer to {method} within 20 s"))??;
            if n == 0 {
                anyhow::bail!("chromium exited while waiting for {method}");
            }
            buf.pop();
            let v: Value = serde_json::from_slice(&buf)?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    anyhow::bail!("chromium: {method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Navigates the page to `url`.
    pub async fn goto(&mut self, url: &str) -> anyhow::Result<()> {
        self.call(Some(()), "Page.navigate", json!({"url": url})).await?;
        Ok(())
    }

    /// Evaluates `expr` in the page (DevTools evaluation is not subject to
    /// the page's CSP; the page's own script is) and returns its value.
    pub async fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                Some(()),
                "Runtime.evaluate",
                // A promise (a fetch from the page) is awaited.
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expr` every 100 ms until it is `true`, at most `limit`.
    /// Fills the console's login form (already open, or opened at `ui`'s
    /// `/login` when `open` is set) with `token`, submits it and waits (at
    /// most 10 s) for the Fleet page a login lands on.
    pub async fn log_in(&mut self, ui: std::net::SocketAddr, token: &str, open: bool) -> anyhow::Result<()> {
        if open {
            self.goto(&format!("http://{ui}/login")).await?;
        }
        let form = "document.querySelector('input[name=token]') !== null";
        anyhow::ensure!(
            self.wait_for(form, Duration::from_secs(10)).await?,
            "no login form at http://{ui}/login"
        );
        self.eval(&format!(
            "document.querySelector('input[name=token]').value = '{token}'; document.forms[0].submit(); true"
        ))
        .await?;
        anyhow::ensure!(
            self.wait_for("location.pathname === '/fleet'", Duration::from_secs(10))
                .await?,
            "logging in did not land on /fleet"
        );
        Ok(())
    }

    pub async fn wait_for(&mut self, expr: &str, limit: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.eval(expr).await {
                Ok(Value::Bool(true)) => return Ok(true),
                Ok(_) => {}
                // A navigation under way (a form just submitted) destroys
                // the page's execution context ("Execution context was
                // destroyed", "Inspected target navigated or closed"): not
                // there yet.
                Err(e) if ["context", "navigated"].iter().any(|m| e.to_string().contains(m)) => {}
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(false)
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&mut self) -> anyhow::Result<Vec<u8>> {
        let r = self
            .call(Some(()), "Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        base64_decode(r["data"].as_str().unwrap_or_default())
    }
}

/// The colours of a rectangle of a PNG screenshot (in CSS pixels, as
/// `getBoundingClientRect` gives them: headless Chromium draws at a device
/// pixel ratio of 1), as RGB triples with their pixel counts.
pub fn png_colours(png_bytes: &[u8], x: u32, y: u32, w: u32, h: u32) -> anyhow::Result<Vec<([u8; 3], usize)>> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info()?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| anyhow::anyhow!("the screenshot is too large to decode"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf)?;
    let px = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => anyhow::bail!("unexpected PNG colour type {other:?}"),
    };
    if info.bit_depth != png::BitDepth::Eight {
        anyhow::bail!("unexpected PNG bit depth {:?}", info.bit_depth);
    }
    let mut counts: std::collections::HashMap<[u8; 3], usize> = std::collections::HashMap::new();
    for row in y..(y + h).min(info.height) {
        for col in x..(x + w).min(info.width) {
            let i = (row as usize * info.width as usize + col as usize) * px;
            if let Some(c) = buf.get(i..i + 3) {
                *counts.entry([c[0], c[1], c[2]]).or_default() += 1;
            }
        }
    }
    let mut v: Vec<([u8; 3], usize)> = counts.into_iter().collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(v)
}

/// How many of `colours` are within 24 per channel of `rgb`.
pub fn near(colours: &[([u8; 3], usize)], rgb: [u8; 3]) -> usize {
    colours
        .iter()
        .filter(|(c, _)| {
            c.iter()
                .zip(rgb)
                .all(|(a, b)| (i32::from(*a) - i32::from(b)).abs() < 24)
        })
        .map(|(_, n)| n)
        .sum()
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Standard base64 (the screenshot's encoding), without a dependency.
fn base64_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    let val = |c: u8| -> anyhow::Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => anyhow::bail!("not base64: {c}"),
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let k = chunk.len().saturating_sub(1);
        for i in 0..k {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(super::base64_decode("YWJj").unwrap(), b"abc");
    }
}
