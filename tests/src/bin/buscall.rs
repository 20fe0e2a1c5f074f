//! Calls one method of hostfwd's Manager many times, concurrently, on the
//! system bus of `DBUS_SYSTEM_BUS_ADDRESS` (the test bus): what busctl
//! cannot do, with arguments larger than a command line may hold (Linux
//! caps one at 128 KiB) and at a rate that floods. Run as any user
//! (`TestBus::command`).
//!
//! ```text
//! buscall ValidatePolicy FILE COUNT PARALLEL   the text of FILE as the argument
//! buscall GetStatistics - COUNT PARALLEL
//! ```
//!
//! One line per call, in completion order: `ok N FIRST` (ValidatePolicy:
//! N errors, the first one) or `ok` / `error NAME: MESSAGE` (the message
//! cut at 300 characters). Exit status 0 if every call got a reply or an
//! error reply, 1 if the bus could not be used.

use std::process::ExitCode;

use futures::stream::{self, StreamExt};

const DEST: &str = "org.hostfwd.Firewall1";
const PATH: &str = "/org/hostfwd/Firewall1";
const MANAGER: &str = "org.hostfwd.Firewall1.Manager";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("buscall: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("buscall: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: &[String]) -> Result<(), String> {
    let [_, method, file, count, parallel] = args else {
        return Err("usage: buscall METHOD FILE|- COUNT PARALLEL".into());
    };
    let count: usize = count.parse().map_err(|_| format!("bad COUNT {count}"))?;
    let parallel: usize = parallel
        .parse()
        .map_err(|_| format!("bad PARALLEL {parallel}"))?;
    let text = match file.as_str() {
        "-" => None,
        f => Some(std::fs::read_to_string(f).map_err(|e| format!("reading {f}: {e}"))?),
    };
    let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .map_err(|_| "DBUS_SYSTEM_BUS_ADDRESS is not set".to_string())?;
    let conn = zbus::connection::Builder::address(address.as_str())
        .map(|b| b.method_timeout(std::time::Duration::from_secs(600)))
        .map_err(|e| format!("bus address {address}: {e}"))?
        .build()
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let calls = stream::iter(0..count).map(|_| {
        let conn = conn.clone();
        let text = text.clone();
        async move {
            let reply = match &text {
                Some(t) => {
                    conn.call_method(
                        Some(DEST),
                        PATH,
                        Some(MANAGER),
                        method.as_str(),
                        &(t.as_str(),),
                    )
                    .await
                }
                None => {
                    conn.call_method(Some(DEST), PATH, Some(MANAGER), method.as_str(), &())
                        .await
                }
            };
            match reply {
                Ok(m) if method == "ValidatePolicy" => {
                    match m.body().deserialize::<Vec<String>>() {
                        Ok(errors) => format!(
                            "ok {} {}",
                            errors.len(),
                            errors.first().map(String::as_str).unwrap_or("")
                        ),
                        Err(e) => format!("error reply: {e}"),
                    }
                }
                Ok(_) => "ok".to_string(),
                Err(zbus::Error::MethodError(name, msg, _)) => {
                    let msg: String = msg.unwrap_or_default().chars().take(300).collect();
                    format!("error {name}: {msg}")
                }
                Err(e) => format!("error other: {e}"),
            }
        }
    });
    let mut out = calls.buffer_unordered(parallel.max(1));
    while let Some(line) = out.next().await {
        println!("{}", line.replace('\n', " | "));
    }
    Ok(())
}
