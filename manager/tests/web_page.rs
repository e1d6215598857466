//! The web page in a real browser: Debian's `chromium`, headless, driven through
//! `chromedriver`'s W3C WebDriver HTTP API (plain JSON calls, no driver crate). The browser logs in
//! through the form with an admin token, lands on the dashboard with an HttpOnly session cookie
//! and no token in the URL, sees a planted detection, and a screenshot is saved under
//! `target/manager/`. A wrong token gets the login form again.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

/// WebDriver's element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A `chromedriver` process, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (package chromium-driver, installed by scripts/bootstrap)");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        wait_for("chromedriver", Duration::from_secs(60), || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut r = agent.get(&status).call().ok()?;
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
            (v["value"]["ready"] == true).then_some(())
        });
        driver
    }

    /// A WebDriver call; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let a = call(
            method,
            &format!("{}{path}", self.url),
            None,
            &[("Content-Type", "application/json")],
            body.as_deref().map(str::as_bytes),
        );
        assert_eq!(a.status, 200, "WebDriver {method} {path}: {}", a.json);
        a.json["value"].clone()
    }
}

/// One browser session.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl Browser<'_> {
    fn open(driver: &Driver) -> Browser<'_> {
        let v = driver.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1800"]
                }
            }}})),
        );
        let browser = Browser {
            driver,
            session: v["sessionId"].as_str().expect("session id").to_string(),
        };
        // Finding an element waits for it (up to 30 s) while a page loads.
        browser.call("POST", "/timeouts", Some(json!({ "implicit": 30_000 })));
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The text of `css`, or `None` while the page is changing (element missing or stale).
    fn try_text(&self, css: &str) -> Option<String> {
        let base = format!("{}/session/{}", self.driver.url, self.session);
        let body = json!({"using": "css selector", "value": css}).to_string();
        let found = call(
            "POST",
            &format!("{base}/element"),
            None,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        );
        let id = found.json["value"][ELEMENT].as_str()?.to_string();
        let text = call("GET", &format!("{base}/element/{id}/text"), None, &[], None);
        (text.status == 200).then(|| text.json["value"].as_str().map(str::to_string))?
    }

    fn log_in(&self, token: &str) {
        let field = self.find("input[name=token]");
        self.call(
            "POST",
            &format!("/element/{field}/value"),
            Some(json!({ "text": token })),
        );
        let button = self.find("button#login");
        self.call("POST", &format!("/element/{button}/click"), Some(json!({})));
        // Wait for the next document: the old button goes stale when it has replaced the form.
        let path = format!(
            "{}/session/{}/element/{button}/name",
            self.driver.url, self.session
        );
        wait_for("the page after logging in", Duration::from_secs(60), || {
            let a = call("GET", &path, None, &[], None);
            (a.json["value"]["error"] == "stale element reference").then_some(())
        });
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = call(
            "DELETE",
            &format!("{}/session/{}", self.driver.url, self.session),
            None,
            &[],
            None,
        );
    }
}

#[test]
fn chromium_logs_in_and_sees_a_planted_detection() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let admin = token(&db, "admin", "ops");
    let m = Manager::start(&db, &[]);
    let target = "/vmfs/volumes/ds1/web-01/web-01.vmdk";
    let mut report = sample_report(target);
    report["detections"][0]["path"] = json!("/Users/Public/planted eicar.com");
    report["engine"]["db"] = json!({"version": 0, "sha256": "ab".repeat(32),
        "manager_version": "2026-12-06.1"});
    let sigs = dir.path().join("web.ndb");
    std::fs::write(&sigs, "Coldscan.Test.Web:0:*:41424344\n").unwrap();
    manager_cli(
        &db,
        &[
            "signatures",
            "set",
            "--version",
            "2026-12-06.2",
            sigs.to_str().unwrap(),
        ],
    );
    let a = post_report(&m, Some(&appliance), "k1", report.to_string().as_bytes());
    assert_eq!(a.status, 201);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.go(&m.url);
    assert!(browser.text("h1").contains("coldscan manager"));
    // A wrong token: the login form again, with an error.
    browser.log_in(&"x".repeat(43));
    assert!(browser.text("p.failed").contains("not a valid admin token"));
    // The appliance token is not an admin token either.
    browser.log_in(&appliance);
    assert!(browser.text("p.failed").contains("not a valid admin token"));

    browser.log_in(&admin);
    let detections = browser.text("h2#detections + table");
    assert!(
        detections.contains("/Users/Public/planted eicar.com")
            && detections.contains("Coldscan.Test.EICAR.UNOFFICIAL")
            && detections.contains(target),
        "detections table: {detections}"
    );
    let scans = browser.text("h2#scans + table");
    assert!(scans.contains("infected"), "{scans}");
    // The scan names its signature database; the current one for appliances is shown.
    assert!(scans.contains("2026-12-06.1"), "{scans}");
    assert!(browser.text("h2#signatures + p").contains("2026-12-06.2"));
    assert!(!browser
        .find("form[action='/quarantine'] button#quarantine")
        .is_empty());
    assert!(browser.text("h2#appliances + table").contains("esx-01"));
    // The token never shows in the URL; the session cookie is HttpOnly.
    let url = browser.call("GET", "/url", None);
    assert!(!url.as_str().unwrap().contains(&admin), "{url}");
    let cookies = browser.call("GET", "/cookie", None);
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "coldscan_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");

    // Queue a job through the page's form.
    let field = browser.find("input[name=target]");
    browser.call(
        "POST",
        &format!("/element/{field}/value"),
        Some(json!({ "text": "/vmfs/volumes/ds1/db-01/db-01.vmdk" })),
    );
    let button = browser.find("h2#jobs + form button");
    browser.call("POST", &format!("/element/{button}/click"), Some(json!({})));
    let jobs = wait_for(
        "the queued job on the page",
        Duration::from_secs(60),
        || {
            let text = browser.try_text("h2#jobs + form + table")?;
            text.contains("/vmfs/volumes/ds1/db-01/db-01.vmdk")
                .then_some(text)
        },
    );
    assert!(jobs.contains("queued"), "{jobs}");
    let listed = get(&m, "/api/v1/jobs", &admin).json;
    assert_eq!(
        listed["jobs"][0]["target"],
        "/vmfs/volumes/ds1/db-01/db-01.vmdk"
    );
    // A form post with the session cookie but a forged CSRF token is refused; without the
    // cookie too. Neither queues anything.
    let cookie = format!("coldscan_session={}", session["value"].as_str().unwrap());
    let forged = call(
        "POST",
        &format!("{}/jobs", m.url),
        None,
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(b"csrf=forged&target=%2Fvm%2Fevil"),
    );
    assert_eq!(forged.status, 403);
    let anonymous = call(
        "POST",
        &format!("{}/jobs", m.url),
        None,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"csrf=forged&target=%2Fvm%2Fevil"),
    );
    assert_eq!(anonymous.status, 401);
    assert_eq!(list_all(&m, "/api/v1/jobs", "jobs", &admin).len(), 1);

    let png = browser.call("GET", "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let out = coldscan_tests::cache::target_dir().join("manager");
    std::fs::create_dir_all(&out).unwrap();
    let shot = out.join("web-page.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot: {}", shot.display());

    // Logging out ends the session: the login form again, and the old cookie is worthless.
    let button = browser.find("form[action='/logout'] button");
    browser.call("POST", &format!("/element/{button}/click"), Some(json!({})));
    wait_for("the login form", Duration::from_secs(60), || {
        let form = browser.try_text("form")?;
        form.contains("Admin token").then_some(())
    });
    let replayed = call(
        "GET",
        &format!("{}/", m.url),
        None,
        &[("Cookie", &cookie)],
        None,
    );
    let page = replayed.json.as_str().unwrap_or_default().to_string();
    assert!(page.contains("name=\"token\""), "the login form: {page}");
}
