//! The web UI in a real browser: Debian's headless Chromium, driven over the DevTools protocol
//! (a websocket, `tungstenite`), against a real server holding the demo shop's run (faults
//! `payments:500` and `email:down`, the demo's manifest) and a trace whose every name and
//! attribute is hostile markup.
//!
//! It checks what a tester sees: the failing edge's cell is marked failing and the critical
//! edge no test touched is marked untested; a click on a cell opens the edge's interfaces and
//! tests; the trace link of a failure opens the waterfall with the span the failure is placed on
//! highlighted; and the hostile trace executes nothing on any page — no dialog opens, no element
//! is injected. A trace sent with its OTLP log records shows them in the waterfall, the error
//! evidence under its row and a secret in a body redacted. Every page is saved as a screenshot
//! under `target/ui-screenshots/`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tracecov::demo::{self, Fault};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::common::{HEADLESS_CHROMIUM, PATIENCE, TestServer, chromium, fixture};
use crate::metrics::demo_run;

const IMG: &str = "<img src=x onerror=alert(1)>";
const SCRIPT: &str = "</script><script>alert(2)</script>";
const BREAKOUT: &str = "\"><svg onload=alert(3)>";
const HOSTILE_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn screenshots_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless Chromium with a fresh profile, killed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws_url: String,
}

impl Browser {
    fn launch() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args(HEADLESS_CHROMIUM)
            .args(["--remote-debugging-port=0", "--window-size=1400,1000"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chromium");
        // Chromium prints the browser's websocket address on stderr once it listens.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_owned());
                    sent = true;
                }
            }
        });
        let ws_url = rx
            .recv_timeout(PATIENCE)
            .expect("chromium did not print its DevTools address in time");
        Self {
            child,
            _profile: profile,
            ws_url,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page, driven through a flattened session on the browser's websocket.
struct Page {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Events read while waiting for something else.
    events: Vec<Value>,
    /// Every dialog (alert, confirm, prompt) any page opened.
    dialogs: Vec<String>,
}

impl Page {
    fn open(browser: &Browser) -> Self {
        let (ws, _) = tungstenite::connect(browser.ws_url.as_str()).expect("DevTools websocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        let mut page = Page {
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            dialogs: Vec::new(),
        };
        let target = page.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = page.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        page.session = attached["sessionId"].as_str().unwrap().to_owned();
        page.call("Page.enable", json!({}));
        page.call("Runtime.enable", json!({}));
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        page
    }

    /// Reads one message, or none within the socket's read timeout.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["method"] == "Page.javascriptDialogOpening" {
                    self.dialogs.push(v["params"]["message"].to_string());
                    // Dismiss it, or the page would hang; the test fails on `dialogs` anyway.
                    let id = self.send("Page.handleJavaScriptDialog", json!({"accept": false}));
                    let _ = id;
                }
                Some(v)
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection failed: {e}"),
        }
    }

    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let mut msg = json!({"id": self.next_id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("DevTools send");
        self.next_id
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let Some(v) = self.read() else { continue };
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    fn wait_event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(
                Instant::now() < deadline,
                "no {method} event within {PATIENCE:?}"
            );
            if let Some(v) = self.read() {
                if v["method"] == method {
                    return v;
                }
                if v.get("method").is_some() {
                    self.events.push(v);
                }
            }
        }
    }

    fn goto(&mut self, url: &str) {
        self.events.clear();
        let r = self.call("Page.navigate", json!({"url": url}));
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
        self.wait_event("Page.loadEventFired");
    }

    /// The value of a JavaScript expression evaluated in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression} threw: {r}"
        );
        r["result"]["value"].clone()
    }

    /// Like `eval`, but `None` while the page is between documents (a reload in progress).
    fn try_eval(&mut self, expression: &str) -> Option<Value> {
        let id = self.send(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no answer to Runtime.evaluate");
            let Some(v) = self.read() else { continue };
            if v["id"] == id {
                if v.get("error").is_some() || v["result"].get("exceptionDetails").is_some() {
                    return None;
                }
                return Some(v["result"]["result"]["value"].clone());
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Clicks the element `selector` names with a real mouse event at its centre, and waits
    /// for the page it opens.
    fn click_and_wait(&mut self, selector: &str) {
        self.click(selector);
        self.wait_event("Page.loadEventFired");
    }

    /// Clicks the element `selector` names with a real mouse event at its centre.
    fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let rect = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        assert!(rect.is_array(), "nothing to click at {selector}");
        let (x, y) = (rect[0].as_f64().unwrap(), rect[1].as_f64().unwrap());
        self.events.clear();
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// A command to the browser itself rather than to this page's session.
    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        let session = std::mem::take(&mut self.session);
        let r = self.call(method, params);
        self.session = session;
        r
    }

    fn screenshot(&mut self, name: &str) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
    }

    fn url(&mut self) -> String {
        self.eval("location.href").as_str().unwrap().to_owned()
    }

    /// Nothing a hostile string could have made: no image, no event-handler attribute, no script
    /// but the UI's own, no SVG but the service graph and an edge's trend, and no dialog so far.
    fn assert_nothing_injected(&mut self, page: &str) {
        let found = self.eval(
            "JSON.stringify({\
               img: document.querySelectorAll('img').length,\
               handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,\
               scripts: [...document.scripts].map(s => s.getAttribute('src')),\
               stray_svg: [...document.querySelectorAll('svg')].filter(s => s.id !== 'graph' && s.id !== 'trend').length\
             })",
        );
        let found: Value = serde_json::from_str(found.as_str().unwrap()).unwrap();
        assert_eq!(
            found,
            json!({"img": 0, "handlers": 0, "scripts": ["/assets/ui.js"], "stray_svg": 0}),
            "markup was injected into the {page}"
        );
        // Let any handler that did get in run before looking for dialogs.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Some(v) = self.read()
                && v.get("method").is_some()
            {
                self.events.push(v);
            }
        }
        assert!(
            self.dialogs.is_empty(),
            "the {page} opened dialogs: {:?}",
            self.dialogs
        );
    }
}

/// A failing test whose every name, attribute, event and status message is hostile markup.
fn hostile_otlp_json() -> Value {
    let attr = |k: &str, v: Value| match v {
        Value::Number(n) => json!({"key": k, "value": {"intValue": n.to_string()}}),
        v => json!({"key": k, "value": {"stringValue": v}}),
    };
    let t0: u64 = 1_700_000_000_000_000_000;
    let span = |id: &str, parent: Option<&str>, name: &str, kind: u8, attrs: Vec<Value>| {
        let mut s = json!({
            "traceId": HOSTILE_TRACE, "spanId": id, "name": name, "kind": kind,
            "startTimeUnixNano": (t0 + 1_000_000).to_string(),
            "endTimeUnixNano": (t0 + 90_000_000).to_string(),
            "attributes": attrs,
            "status": {"code": 2, "message": format!("{SCRIPT} {BREAKOUT}")},
            "events": [{"name": IMG, "timeUnixNano": (t0 + 2_000_000).to_string(),
                        "attributes": [attr("exception.message", json!(BREAKOUT))]}],
        });
        if let Some(p) = parent {
            s["parentSpanId"] = json!(p);
        }
        s
    };
    let resource = |service: &str, spans: Vec<Value>| {
        json!({
            "resource": {"attributes": [
                attr("service.name", json!(service)),
                attr("tracecov.run.id", json!("hostile-ui")),
            ]},
            "scopeSpans": [{"scope": {"name": IMG}, "spans": spans}],
        })
    };
    json!({"resourceSpans": [
        resource("hostile-tests", vec![
            span("1000000000000001", None, IMG, 1, vec![
                attr("test.case.name", json!(IMG)),
                attr("test.case.result.status", json!("fail")),
            ]),
            span("1000000000000002", Some("1000000000000001"), BREAKOUT, 3, vec![
                attr("http.request.method", json!("GET")),
                attr("http.response.status_code", json!(500)),
                attr("note", json!(SCRIPT)),
            ]),
        ]),
        resource(&format!("svc{BREAKOUT}"), vec![
            span("1000000000000003", Some("1000000000000002"), SCRIPT, 2, vec![
                attr("http.request.method", json!("GET")),
                attr("http.route", json!(format!("/x/{IMG}"))),
                attr("http.response.status_code", json!(500)),
                attr("html", json!(BREAKOUT)),
            ]),
        ]),
    ]})
}

fn cell(caller: &str, callee: &str) -> String {
    format!("td.cell[data-caller=\"{caller}\"][data-callee=\"{callee}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_the_demo_run_and_executes_nothing_from_a_span() {
    let browser_bin = chromium();
    let server = TestServer::start_with(|c| {
        c.test_services = vec![demo::TEST_SERVICE.into()];
        c.builtin_manifest = Some(tracecov::coverage::demo_manifest());
    })
    .await;
    let report = demo_run(
        &server,
        "ui-demo",
        vec![Fault::Payments500, Fault::EmailDown],
    )
    .await;
    let run_id = report["run"]["id"].as_str().unwrap().to_owned();

    let resp = server
        .post_otlp(
            "application/json",
            hostile_otlp_json().to_string().into_bytes(),
            false,
        )
        .await;
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = server
            .get_json(&format!("/api/traces/{HOSTILE_TRACE}"))
            .await;
        if status == 200 && body["spans"].as_array().is_some_and(|s| s.len() == 3) {
            break;
        }
        assert!(Instant::now() < deadline, "the hostile trace never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ui = server.addrs.ui_url();
    assert!(browser_bin.is_file());
    // The browser is driven synchronously; the server keeps running on the other workers, and
    // `drive` posts spans through it mid-way to watch an open run's page refresh itself.
    tokio::task::block_in_place(|| drive(&server, &ui, &run_id));
    server.stop().await;
}

fn drive(server: &TestServer, ui: &str, run_id: &str) {
    let browser = Browser::launch();
    let mut page = Page::open(&browser);

    // The runs page lists both runs.
    page.goto(&format!("{ui}/"));
    let runs =
        page.eval("[...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.run)");
    assert!(
        runs.as_array().unwrap().iter().any(|r| r == run_id),
        "{runs}"
    );
    assert!(page.eval("document.querySelectorAll('#runs tbody tr').length") == json!(2));
    page.screenshot("runs");
    page.assert_nothing_injected("runs page");

    // The run page: the failing edge and the untested critical edge, by status and by symbol.
    page.goto(&format!("{ui}/runs/{run_id}"));
    page.screenshot("run");
    let failing = cell("checkout", "payments");
    let status = page.eval(&format!(
        "(() => {{ const c = document.querySelector('{failing}'); \
         return c && [c.dataset.status, c.className, c.textContent.trim(), c.title]; }})()"
    ));
    assert_eq!(status[0], "failing", "{status}");
    assert!(status[1].as_str().unwrap().contains("failing"), "{status}");
    assert!(status[2].as_str().unwrap().contains('✗'), "{status}");
    assert!(
        status[3].as_str().unwrap().contains("callee_error"),
        "{status}"
    );
    let untested = cell("gateway", "payments");
    let status = page.eval(&format!(
        "(() => {{ const c = document.querySelector('{untested}'); \
         return c && [c.dataset.status, c.dataset.critical, c.textContent.trim()]; }})()"
    ));
    assert_eq!(status, json!(["untested", "true", "★?"]));
    // The failures table and the graph show the failing hop too.
    let classes =
        page.eval("[...document.querySelectorAll('#failures tbody tr')].map(r => r.dataset.class)");
    assert!(
        classes
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "callee_error")
            && classes
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "unreachable"),
        "{classes}"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#graph path.edge.failing[data-caller=\"checkout\"][data-callee=\"payments\"]').length"),
        json!(1)
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#graph path.edge.untested[data-caller=\"gateway\"][data-callee=\"payments\"]').length"),
        json!(1)
    );
    // The critical edge carries its star in the graph too, and a queue only the manifest names
    // is still drawn as a queue.
    assert_eq!(
        page.eval("document.querySelectorAll('#graph text.critical-mark[data-caller=\"gateway\"][data-callee=\"payments\"]').length"),
        json!(1)
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#graph g.node.messaging[data-node=\"queue:memory/orders\"]').length"),
        json!(1)
    );
    // Nodes are outlined by the worst edge they touch; the mocked email API is listed stubbed.
    assert_eq!(
        page.eval("['payments', 'queue:memory/orders', 'users'].map(n => document.querySelector(`#graph g.node[data-node=\"${n}\"]`).classList.contains('failing') ? 'failing' : document.querySelector(`#graph g.node[data-node=\"${n}\"]`).classList.contains('untested') ? 'untested' : 'fine')"),
        json!(["failing", "untested", "fine"])
    );
    let stubbed =
        page.eval("[...document.querySelectorAll('#stubbed li')].map(l => l.textContent)");
    assert!(
        stubbed
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("notifications → ext:sendgrid")),
        "{stubbed}"
    );
    page.assert_nothing_injected("demo run page");

    // Clicking the failing cell opens its interfaces and tests.
    page.click_and_wait(&format!("{failing} a"));
    assert!(
        page.url()
            .contains("/edges?caller=checkout&callee=payments")
    );
    let iface = page.eval(
        "(() => { const r = document.querySelector('#interfaces tr[data-operation=\"POST /charge\"]'); \
         return r && [r.dataset.status, [...r.querySelectorAll('.tests li')].map(l => l.textContent)]; })()",
    );
    assert_eq!(iface[0], "failing", "{iface}");
    assert!(
        iface[1]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "checkout_paid"),
        "{iface}"
    );
    page.screenshot("edge");

    // A failure's trace link opens the waterfall with the placed span highlighted.
    page.goto(&format!("{ui}/runs/{run_id}"));
    let placed_span = page.eval(
        "new URL(document.querySelector('#failures tbody tr[data-class=\"callee_error\"] a.trace-link').href).searchParams.get('span')",
    );
    page.click_and_wait("#failures tbody tr[data-class=\"callee_error\"] a.trace-link");
    assert!(page.url().contains("/traces/"));
    let placed = page.eval(
        "[...document.querySelectorAll('.wf-row.placed')].map(r => [r.dataset.span, r.classList.contains('selected'), r.open, r.querySelector('summary').textContent])",
    );
    let placed = placed.as_array().unwrap();
    assert_eq!(placed.len(), 1, "{placed:?}");
    assert_eq!(placed[0][0], placed_span);
    assert_eq!(placed[0][1], true);
    assert!(
        placed[0][3]
            .as_str()
            .unwrap()
            .contains("failure placed here")
    );
    assert!(
        page.eval("document.querySelectorAll('.wf-row.collateral').length")
            .as_u64()
            .unwrap()
            > 0
    );
    page.screenshot("trace");

    // Its bug report, with the Markdown to copy.
    let trace_url = page.url();
    let trace_id = trace_url
        .split("/traces/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    page.goto(&format!(
        "{ui}/traces/{trace_id}/bug?span={}",
        placed_span.as_str().unwrap()
    ));
    let md = page.eval("document.getElementById('bug-markdown').textContent");
    assert!(md.as_str().unwrap().contains("callee_error"), "{md}");
    // The copy button puts exactly that Markdown on the clipboard.
    page.call_browser(
        "Browser.grantPermissions",
        json!({"origin": ui, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
    );
    page.click("button[data-copy=\"bug-markdown\"]");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let label =
            page.eval("document.querySelector('button[data-copy=\"bug-markdown\"]').textContent");
        if label == "Copied" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the copy button never copied: {label}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(page.eval("navigator.clipboard.readText()"), md);
    page.screenshot("bug");

    // The hostile trace, on every page it reaches.
    for (name, path) in [
        ("hostile-run", "/runs/hostile-ui".to_owned()),
        (
            "hostile-trace",
            format!("/traces/{HOSTILE_TRACE}?span=1000000000000003"),
        ),
        ("hostile-bug", format!("/traces/{HOSTILE_TRACE}/bug")),
        (
            "hostile-edge",
            format!(
                "/runs/hostile-ui/edges?caller=hostile-tests&callee={}",
                tracecov::web::ui::enc(&format!("svc{BREAKOUT}"))
            ),
        ),
        ("runs-with-hostile", "/".to_owned()),
    ] {
        page.goto(&format!("{ui}{path}"));
        page.screenshot(name);
        let text = page.eval("document.body.innerText");
        let text = text.as_str().unwrap();
        assert!(
            !text.contains("Not Found") && !text.contains("Bad Request"),
            "{name}: {text}"
        );
        // The hostile strings are there, as text.
        if name != "runs-with-hostile" {
            assert!(
                text.contains(IMG) || text.contains(BREAKOUT),
                "{name} shows none of the hostile text: {text}"
            );
        }
        page.assert_nothing_injected(name);
    }
    page.goto(&format!(
        "{ui}/traces/{HOSTILE_TRACE}?span=1000000000000003"
    ));
    let attrs = page.eval("document.body.innerText");
    assert!(attrs.as_str().unwrap().contains(SCRIPT), "{attrs}");
    assert!(page.dialogs.is_empty(), "dialogs: {:?}", page.dialogs);

    // A link to a span the trace does not hold still shows the trace, and says so.
    page.goto(&format!(
        "{ui}/traces/{HOSTILE_TRACE}?span=00000000000000ff"
    ));
    assert_eq!(
        page.eval("document.getElementById('no-such-span') !== null && document.querySelectorAll('.wf-row').length"),
        json!(3)
    );

    // The hostile run is still open: its page says so and refreshes itself when a new test's
    // spans arrive, without anyone reloading it.
    page.goto(&format!("{ui}/runs/hostile-ui"));
    assert_eq!(
        page.eval("document.getElementById('open-run') !== null"),
        json!(true)
    );
    assert_eq!(page.eval(TESTS_CARD), json!("1"));
    page.eval("window.__before_refresh = true");
    let resp = tokio::runtime::Handle::current().block_on(server.post_otlp(
        "application/json",
        passing_test_otlp_json().to_string().into_bytes(),
        false,
    ));
    assert!(resp.status().is_success());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = page.try_eval(&format!("[window.__before_refresh === true, {TESTS_CARD}]"));
        if state == Some(json!([false, "2"])) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the open run's page did not refresh to show the new test: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    page.screenshot("open-run-refreshed");
}

/// The number on the run page's "tests" card.
const TESTS_CARD: &str = "document.querySelector('.cards .card b').textContent";

/// One passing test in the hostile run, sent while its page is open.
fn passing_test_otlp_json() -> Value {
    let t0: u64 = 1_700_000_001_000_000_000;
    json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "hostile-tests"}},
            {"key": "tracecov.run.id", "value": {"stringValue": "hostile-ui"}},
        ]},
        "scopeSpans": [{"spans": [{
            "traceId": "1af7651916cd43dd8448eb211c80319c", "spanId": "2000000000000001",
            "name": "a_later_test", "kind": 1,
            "startTimeUnixNano": t0.to_string(), "endTimeUnixNano": (t0 + 5_000_000).to_string(),
            "attributes": [
                {"key": "test.case.name", "value": {"stringValue": "a_later_test"}},
                {"key": "test.case.result.status", "value": {"stringValue": "pass"}},
            ],
        }]}],
    }]})
}

/// A page's status, content type and body.
async fn get_page(server: &TestServer, path: &str) -> (u16, String, String) {
    let resp = server.http.get(server.api(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, resp.text().await.unwrap())
}

#[tokio::test]
async fn a_new_user_and_a_bad_link_get_a_page_that_says_what_to_do() {
    let server = TestServer::start().await;

    // An empty store: the runs page says where to send spans.
    let (status, kind, body) = get_page(&server, "/").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/html"));
    assert!(body.contains("id=\"no-runs\""), "{body}");
    assert!(body.contains(&server.addrs.otlp_http_url()), "{body}");
    let (status, _, body) = get_page(&server, "/runs/latest").await;
    assert_eq!(status, 404);
    assert!(body.contains("no run in the store yet"), "{body}");

    // Bad links: HTML pages with the status and the reason, JSON under /api/.
    for (path, want, says) in [
        ("/no/such/page", 404, "nothing at /no/such/page"),
        ("/runs/nope/edges", 400, "?caller=A&amp;callee=B"),
        ("/traces/zzz", 400, "zzz"),
        (
            "/traces/0af7651916cd43dd8448eb211c80319c",
            404,
            "0af7651916cd43dd8448eb211c80319c",
        ),
    ] {
        let (status, kind, body) = get_page(&server, path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(kind.starts_with("text/html"), "{path}: {kind}");
        assert!(body.contains(says), "{path}: {body}");
        assert!(
            !body.contains("0000000000zzz"),
            "{path} padded before checking: {body}"
        );
    }
    let (status, kind, body) = get_page(&server, "/api/nope").await;
    assert_eq!((status, kind.as_str()), (404, "application/json"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn the_trace_view_shows_span_details_redacted() {
    let server = TestServer::start().await;
    let trace = "2af7651916cd43dd8448eb211c80319c";
    let doc = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "3000000000000001", "name": "GET /login", "kind": 2,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000005000000",
            "attributes": [
                {"key": "url.full", "value": {"stringValue": "https://pay.example.com/x?api_key=sk_live_1234&n=1"}},
                {"key": "http.request.header.authorization", "value": {"stringValue": "Bearer eyJhbGciOi.secret"}},
                {"key": "db.connection_string", "value": {"stringValue": "postgres://ann:hunter2@db:5432/shop"}},
            ],
            "events": [{"name": "log", "timeUnixNano": "1700000000001000000",
                        "attributes": [{"key": "message", "value": {"stringValue": "login with password=hunter2"}}]}],
        }]}],
    }]});
    let resp = server
        .post_otlp("application/json", doc.to_string().into_bytes(), false)
        .await;
    assert!(resp.status().is_success());
    let deadline = Instant::now() + PATIENCE;
    let body = loop {
        let (status, _, body) =
            get_page(&server, &format!("/traces/{trace}?span=3000000000000001")).await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "the trace never arrived: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for secret in ["sk_live_1234", "eyJhbGciOi", "hunter2"] {
        assert!(!body.contains(secret), "{secret} shown on the trace page");
    }
    assert!(body.contains("[REDACTED]"), "{body}");
    assert!(
        body.contains("pay.example.com"),
        "redaction keeps what is not secret"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waterfall_shows_a_spans_log_records_redacted() {
    // The hand-written incident (tests/fixtures/README.md): each line sent to the receiver it
    // is for, the logs before and after the spans as the file has them.
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CONSUMER: &str = "2000000000000001";
    let server = TestServer::start().await;
    let file = std::fs::read_to_string(fixture("otlp-json/order-incident.jsonl")).unwrap();
    for line in file.lines() {
        let signal = if line.starts_with("{\"resourceLogs\"") {
            "logs"
        } else {
            "traces"
        };
        let resp = server
            .http
            .post(format!("{}/v1/{signal}", server.addrs.otlp_http_url()))
            .header("content-type", "application/json")
            .body(line.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{signal}: {:?}", resp.text().await);
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = server.get_json(&format!("/api/traces/{TRACE}")).await;
        let logs = body["spans"].as_array().and_then(|spans| {
            spans
                .iter()
                .find(|s| s["span_id"] == CONSUMER)
                .map(|s| s["logs"].as_array().map_or(0, Vec::len))
        });
        if status == 200 && logs == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the trace and its records never arrived: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ui = server.addrs.ui_url();
    tokio::task::block_in_place(|| {
        let browser = Browser::launch();
        let mut page = Page::open(&browser);
        page.goto(&format!("{ui}/traces/{TRACE}"));
        // Under the consumer's row, the ERROR record, marked as error evidence by a symbol and
        // a word, with its offset from the trace's start (shown while the row is closed).
        let under = page.eval(&format!(
            "(() => {{ const u = document.querySelector('ul.wf-evidence[data-span=\"{CONSUMER}\"]'); \
             return u && [u.textContent, u.querySelectorAll('li').length, \
               document.querySelector('details.wf-row[data-span=\"{CONSUMER}\"]').open]; }})()"
        ));
        let text = under[0]
            .as_str()
            .unwrap_or_else(|| panic!("no evidence row: {under}"));
        assert!(
            text.contains("+35.0 ms")
                && text.contains("✗ ERROR")
                && text.contains(
                    "reserve failed for order 42: stock db refused login password=[REDACTED]"
                ),
            "{text}"
        );
        assert_eq!(
            under[1], 1,
            "only the error evidence is listed under the row"
        );
        // The failure is placed on the consumer (blamed from its log record), so its row is
        // open: both records, in time order, the ERROR one marked.
        assert_eq!(under[2], true, "the consumer's row is not open: {under}");
        let rows = page.eval(&format!(
            "[...document.querySelectorAll('details.wf-row[data-span=\"{CONSUMER}\"] table.logs > tbody > tr')]\
             .map(r => [r.className, r.innerText])"
        ));
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0][0], "");
        assert!(
            rows[0][1].as_str().unwrap().contains("INFO")
                && rows[0][1]
                    .as_str()
                    .unwrap()
                    .contains("reserving stock for order 42"),
            "{rows:?}"
        );
        assert_eq!(rows[1][0], "log-error");
        let error_row = rows[1][1].as_str().unwrap();
        assert!(
            error_row.contains("ERROR") && error_row.contains("1 attribute"),
            "{rows:?}"
        );
        page.screenshot("trace-logs");
        // Closed by a click, the row shows its error evidence beneath it, on screen.
        let evidence = format!(
            "[document.querySelector('details.wf-row[data-span=\"{CONSUMER}\"]').open, \
              document.querySelector('ul.wf-evidence[data-span=\"{CONSUMER}\"]').offsetHeight > 0, \
              document.querySelector('ul.wf-evidence[data-span=\"{CONSUMER}\"]').innerText]"
        );
        assert_eq!(
            page.eval(&evidence)[1],
            false,
            "said twice under an open row"
        );
        page.click(&format!(
            "details.wf-row[data-span=\"{CONSUMER}\"] > summary"
        ));
        let closed = page.eval(&evidence);
        assert_eq!(
            (&closed[0], &closed[1]),
            (&json!(false), &json!(true)),
            "{closed}"
        );
        assert!(
            closed[2]
                .as_str()
                .unwrap()
                .contains("✗ ERROR reserve failed for order 42"),
            "{closed}"
        );
        page.screenshot("trace-logs-closed");
        // The secret is nowhere in the page, not even in markup or attributes.
        let html = page.eval("document.documentElement.outerHTML");
        assert!(
            !html.as_str().unwrap().contains("hunter2"),
            "the secret is on the page"
        );
        page.assert_nothing_injected("trace page with logs");
    });
    // The bug page quotes the record the failure was blamed from, redacted.
    let bug = server
        .http
        .get(format!("{ui}/traces/{TRACE}/bug"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logs = bug
        .split("id=\"bug-logs\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no log records on the bug page: {bug}"));
    assert!(
        logs.contains("reserve failed for order 42") && !bug.contains("hunter2"),
        "{logs}"
    );
    server.stop().await;
}

/// The demo under `payments:double-charge` (every test passes; the demo manifest's "checkout
/// charges once" breaks): the run page lists the violation, its waterfall link opens the trace
/// with the second charge outlined dashed and marked, and its bug report says what was expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waterfall_outlines_the_span_that_broke_an_expectation() {
    let server = TestServer::start_with(|c| {
        c.test_services = vec![demo::TEST_SERVICE.into()];
        c.builtin_manifest = Some(tracecov::coverage::demo_manifest());
    })
    .await;
    let report = demo_run(&server, "doubled", vec![Fault::PaymentsDoubleCharge]).await;
    let violation = report["violations"][0].clone();
    let span = violation["span_id"].as_str().unwrap().to_owned();
    let ui = server.addrs.ui_url();
    tokio::task::block_in_place(|| {
        let browser = Browser::launch();
        let mut page = Page::open(&browser);
        page.goto(&format!("{ui}/runs/doubled"));
        assert!(
            page.eval("document.querySelectorAll('#violations tbody tr').length")
                .as_u64()
                .unwrap()
                >= 1
        );
        page.click_and_wait("#violations tbody tr a");
        assert!(page.url().contains(&span), "{}", page.url());
        let row = page.eval(&format!(
            "(() => {{ const d = document.querySelector('details.wf-row[data-span=\"{span}\"]'); \
             if (!d) return null; const s = getComputedStyle(d.querySelector('summary')); \
             return [d.className, s.outlineStyle, d.querySelector('summary').innerText]; }})()"
        ));
        assert!(
            row[0].as_str().unwrap().contains("violated"),
            "the row is not marked: {row}"
        );
        // Selected too (the link's span), whose solid outline wins: the mark still says it.
        assert!(
            row[2].as_str().unwrap().contains("expectation broken"),
            "{row}"
        );
        page.goto(&format!(
            "{ui}/traces/{}",
            violation["trace_id"].as_str().unwrap()
        ));
        let style = page.eval(&format!(
            "getComputedStyle(document.querySelector('details.wf-row[data-span=\"{span}\"] > summary')).outlineStyle"
        ));
        assert_eq!(style, "dashed", "the offending span is outlined dashed");
        page.screenshot("trace-violation");
        page.click_and_wait("#trace-violations a[href*='/bug']");
        let h1 = page.eval("document.querySelector('h1').innerText");
        let h1 = h1.as_str().unwrap();
        assert!(
            h1.contains("broke the expectation") && h1.contains("checkout charges once"),
            "{h1}"
        );
        let facts = page.eval("document.getElementById('bug-facts').innerText");
        assert!(
            facts.as_str().unwrap().contains("at most 1 call")
                && facts.as_str().unwrap().contains("2 calls"),
            "{facts}"
        );
        page.screenshot("bug-violation");
        page.assert_nothing_injected("violation bug page");
    });
    server.stop().await;
}
