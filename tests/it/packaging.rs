//! The Debian package and its systemd unit: the unit passes `systemd-analyze verify` and scores
//! at most 2.0 on `systemd-analyze security`, and the .deb `packaging/build-deb.sh` builds holds
//! the right files and, unpacked, serves with its shipped config and a systemd credential.

use crate::process::spawn_listening;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const KASSA: &str = env!("CARGO_BIN_EXE_kassa");
/// The unit's ExecStart, which the package's paths must match.
const EXEC_START: &str =
    "ExecStart=/usr/bin/kassa serve --config /etc/kassa/kassa.toml --data-dir /var/lib/kassa";
/// The most exposure `systemd-analyze security` may score the unit.
const EXPOSURE_MAX: f64 = 2.0;
/// Every secret kassa takes from `$CREDENTIALS_DIRECTORY`, named after its config key.
const CREDENTIALS: [&str; 8] = [
    "admin.token",
    "gateway.portone.imp_key",
    "gateway.portone.imp_secret",
    "gateway.toss.secret_key",
    "gateway.payple.cst_id",
    "gateway.payple.cust_key",
    "gateway.payple.refund_key",
    "alerts.slack_webhook_url",
];

const DPKG_HINT: &str = "it comes with dpkg (apt-get install dpkg)";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a tool to the end; a missing tool fails the test with what to install.
async fn run(program: &str, args: &[&str], install_hint: &str) -> std::process::Output {
    match Command::new(program).args(args).output().await {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} is not installed: {install_hint}")
        }
        Err(error) => panic!("cannot run {program}: {error}"),
    }
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(repo().join("packaging/kassa.service")).unwrap();
    assert_eq!(
        unit.lines()
            .filter(|line| line.starts_with("ExecStart="))
            .count(),
        1,
        "one ExecStart"
    );
    assert!(unit.lines().any(|line| line == EXEC_START), "{EXEC_START}");
    for name in CREDENTIALS {
        let load = format!("LoadCredential={name}:/etc/kassa/credentials/{name}");
        assert!(unit.lines().any(|line| line == load), "{load}");
    }

    // verify checks that ExecStart's program exists: this test's binary stands in for the
    // installed one. The file keeps its name, which `security` reports.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kassa.service");
    std::fs::write(
        &copy,
        unit.replace("ExecStart=/usr/bin/kassa ", &format!("ExecStart={KASSA} ")),
    )
    .unwrap();
    let copy = copy.to_str().unwrap();
    let hint = "apt-get install systemd (.ci/run does)";
    let verified = run("systemd-analyze", &["verify", copy], hint).await;
    let printed = text(&verified);
    assert!(verified.status.success(), "verify failed:\n{printed}");
    // verify exits 0 on an unknown key or a value it ignores, and only warns.
    let about_the_unit: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains(copy) || line.contains("kassa.service"))
        .collect();
    assert!(
        about_the_unit.is_empty(),
        "verify warns about the unit:\n{}",
        about_the_unit.join("\n")
    );

    let analyzed = run(
        "systemd-analyze",
        &["security", "--offline=true", copy],
        hint,
    )
    .await;
    let table = text(&analyzed);
    assert!(analyzed.status.success(), "security failed:\n{table}");
    let exposure: f64 = table
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for kassa.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{table}"));
    assert!(
        exposure <= EXPOSURE_MAX,
        "exposure {exposure} is above {EXPOSURE_MAX}:\n{table}"
    );
}

/// Builds the package of this test's binary into `dir`; answers its path.
async fn build_deb(dir: &Path) -> PathBuf {
    let out = dir.join("kassa.deb");
    let script = repo().join("packaging/build-deb.sh");
    let built = Command::new("bash")
        .arg(&script)
        .args(["--binary", KASSA, "--out"])
        .arg(&out)
        // A fast compressor: the test's unstripped binary takes xz (dpkg-deb's default) many
        // seconds. The environment names are dpkg-deb's own (dpkg 1.21.10 and later).
        .env("DPKG_DEB_COMPRESSOR_TYPE", "gzip")
        .env("DPKG_DEB_COMPRESSOR_LEVEL", "1")
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    assert!(
        built.status.success(),
        "build-deb.sh failed:\n{}",
        text(&built)
    );
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert_eq!(
        stdout.lines().next_back().map(Path::new),
        Some(out.as_path()),
        "the package's path is printed last:\n{stdout}"
    );
    out
}

/// Checks the listing, the conffiles and the control fields of the package.
async fn check_deb(deb: &str) {
    let hint = DPKG_HINT;
    let listed = run("dpkg-deb", &["--contents", deb], hint).await;
    assert!(listed.status.success(), "{}", text(&listed));
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    // `-rwxr-xr-x root/root 123 2026-11-23 12:00 ./usr/bin/kassa`: mode, owner and path.
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [mode, owner, _, _, _, .., path] => Some((*mode, *owner, *path)),
                _ => None,
            }
        })
        .collect();
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/kassa"),
        ("-rw-r--r--", "./lib/systemd/system/kassa.service"),
        ("-rw-r--r--", "./etc/kassa/kassa.toml"),
        ("drwx------", "./etc/kassa/credentials/"),
        ("-rw-r--r--", "./usr/share/doc/kassa/README.md"),
    ] {
        assert!(
            entries.contains(&(mode, "root/root", path)),
            "{mode} root/root {path} is not in:\n{listing}"
        );
    }
    let conffiles = run("dpkg-deb", &["--info", deb, "conffiles"], hint).await;
    assert!(conffiles.status.success(), "{}", text(&conffiles));
    assert!(
        String::from_utf8_lossy(&conffiles.stdout)
            .lines()
            .any(|line| line.trim() == "/etc/kassa/kassa.toml"),
        "conffiles: {}",
        text(&conffiles)
    );
    let fields = run("dpkg-deb", &["--field", deb, "Package", "Version"], hint).await;
    let fields = String::from_utf8_lossy(&fields.stdout).into_owned();
    assert!(fields.contains("Package: kassa"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
}

/// The credentials directory systemd makes from the unit: the admin token from its file, and
/// for each secret without a file the unit's `SetCredential=` default, a lone newline.
fn credentials_directory(dir: &Path, admin_token: &str) {
    std::fs::create_dir(dir).unwrap();
    for name in CREDENTIALS {
        let value = if name == "admin.token" {
            admin_token
        } else {
            "\n"
        };
        std::fs::write(dir.join(name), value).unwrap();
    }
}

async fn wait_healthy(http: &reqwest::Client, base: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = http.get(format!("{base}/healthz")).send().await
            && response.status() == StatusCode::OK
        {
            return response.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "/healthz did not answer 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dead_letters_status(http: &reqwest::Client, base: &str, token: &str) -> StatusCode {
    http.get(format!("{base}/api/admin/dead-letters"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// SIGTERM, then a clean exit within 10 s.
async fn stop(child: &mut Child) {
    let pid = child.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("kassa stops within 10 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn the_deb_installs_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path()).await;
    let deb = deb.to_str().unwrap();
    check_deb(deb).await;

    // "Installed" without root: unpacked into a directory.
    let root = dir.path().join("root");
    let unpacked = run("dpkg-deb", &["-x", deb, root.to_str().unwrap()], DPKG_HINT).await;
    assert!(unpacked.status.success(), "{}", text(&unpacked));
    let installed = root.join("usr/bin/kassa");
    assert_eq!(
        std::fs::metadata(&installed).unwrap().len(),
        std::fs::metadata(KASSA).unwrap().len()
    );

    let token = "packaged-admin-token-0123456789";
    let credentials = dir.path().join("credentials");
    credentials_directory(&credentials, token);
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(&installed);
    command
        .args(["serve", "--config"])
        .arg(root.join("etc/kassa/kassa.toml"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("KASSA_PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env("RUST_LOG", "info")
        .env_remove("KASSA_CONFIG")
        .env_remove("KASSA_ADMIN__TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Killed if the test fails before it is stopped.
        .kill_on_drop(true);
    let (mut child, base) = spawn_listening(command).await;
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    let http = crate::support::http_client();
    assert_eq!(wait_healthy(&http, &base).await, json!({ "status": "ok" }));

    assert_eq!(
        dead_letters_status(&http, &base, token).await,
        StatusCode::OK,
        "the admin token from $CREDENTIALS_DIRECTORY/admin.token is taken"
    );
    assert_eq!(
        dead_letters_status(&http, &base, "not-the-admin-token-000000").await,
        StatusCode::UNAUTHORIZED
    );

    stop(&mut child).await;
}
