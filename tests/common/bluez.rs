//! BlueZ without a radio: a private D-Bus daemon standing in for the system bus, and
//! python3-dbusmock's `bluez5` template on it (run with the system `/usr/bin/python3`, where
//! Debian's python3-dbusmock lives; `./scripts/test` installs both). The test drives the mock
//! through its `org.bluez.Mock` and `org.freedesktop.DBus.Mock` methods: adapters and devices
//! come and go, and a device's RSSI and ServiceData change as a phone's adverts would make them.
//!
//! GATT (BlueTrace TempID reads): [`MockControl::gatt_phone`] gives a device `Connect` and
//! `Disconnect` methods that set `Connected` and `ServicesResolved` (the template's own only
//! signal `Connected` and never resolve services), and GATT service and characteristic objects
//! whose `ReadValue` answers fixed bytes. The mock also keeps how many devices are connected at
//! once and the peak ([`MockControl::peak_connections`]), and logs every method call
//! ([`MockControl::calls`]). Limits: the mock is single-threaded and answers every call at once,
//! so a phone that "never answers" is one whose services never resolve (the `Connect` call
//! itself cannot hang), and a slow read cannot be staged.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zbus::Variant as Value;

/// GAEN's service UUID as BlueZ writes it.
pub const GAEN_UUID: &str = "0000fd6f-0000-1000-8000-00805f9b34fb";

/// A private bus: `dbus-daemon` with an allow-all policy on a socket in a temp dir.
pub struct PrivateBus {
    child: Child,
    /// The bus address (`unix:path=...`), for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the shell kills dbus-daemon
        let _ = self.child.wait();
    }
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install {package} (./scripts/test installs it)"
    );
}

impl PrivateBus {
    /// Starts a bus; `policy_extra` is inserted into the config (e.g. a `<policy>` limiting
    /// who may own a name).
    pub fn start() -> Self {
        require("/usr/bin/dbus-daemon", "dbus");
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("bus config");
        // Through a shell that kills the bus when our end of its stdin closes: the bus dies
        // with the test process even when it is never dropped (a `static`) or the test aborts.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(
                "/usr/bin/dbus-daemon --config-file=\"$1\" --nofork --print-address=1 & pid=$!; \
                 cat >/dev/null; kill $pid; wait $pid",
            )
            .arg("sh")
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bus address printed");
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "bus address: {address:?}");
        Self {
            child,
            address,
            _dir: dir,
        }
    }

    /// One bus for the whole test process. libdbus (under bluer) reads
    /// `DBUS_SYSTEM_BUS_ADDRESS` once per process, so in-process tests must all share it.
    pub fn shared() -> &'static PrivateBus {
        static BUS: std::sync::OnceLock<PrivateBus> = std::sync::OnceLock::new();
        BUS.get_or_init(|| {
            let bus = PrivateBus::start();
            // SAFETY: set once, before any test of the process reads it (under the OnceLock).
            unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address) };
            bus
        })
    }

    /// A client connection to this bus.
    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .expect("connect to the private bus")
    }
}

/// python3-dbusmock's bluez5 template, owning `org.bluez` on a private bus.
pub struct BluezMock {
    child: Child,
    log: PathBuf,
}

impl Drop for BluezMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BluezMock {
    /// Starts the mock on `bus` and waits until it owns `org.bluez`.
    pub async fn start(bus: &PrivateBus, log_dir: &Path) -> Self {
        require("/usr/bin/python3", "python3");
        assert!(
            Command::new("/usr/bin/python3")
                .args(["-c", "import dbusmock"])
                .status()
                .is_ok_and(|s| s.success()),
            "python3-dbusmock is missing (./scripts/test installs it)"
        );
        let log = log_dir.join(format!(
            "bluez-mock-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "dbusmock", "--system", "--template", "bluez5"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("mock log"))
            .spawn()
            .expect("dbusmock starts");
        let mock = Self { child, log };
        wait_owner(bus, true).await;
        mock
    }

    /// Kills the mock as a crashing bluetoothd would go (no signals, no cleanup), and waits
    /// until the bus has noticed.
    pub async fn kill(mut self, bus: &PrivateBus) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        wait_owner(bus, false).await;
    }
}

/// Waits until `org.bluez` has (or has no) owner on `bus`.
pub async fn wait_owner(bus: &PrivateBus, owned: bool) {
    {
        let conn = bus.connect().await;
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.expect("dbus proxy");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let name = zbus::names::BusName::try_from("org.bluez").expect("name");
            if dbus.name_has_owner(name).await.unwrap_or(false) == owned {
                // The template registers its objects right after taking the name.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "org.bluez owned = {owned} not reached on the private bus"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Drives the mock over the bus.
pub struct MockControl {
    /// The test's own connection.
    pub conn: zbus::Connection,
}

impl MockControl {
    /// Connects to `bus`.
    pub async fn new(bus: &PrivateBus) -> Self {
        Self {
            conn: bus.connect().await,
        }
    }

    async fn call<B>(&self, path: &str, iface: &str, method: &str, body: &B) -> zbus::Message
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.conn
            .call_method(Some("org.bluez"), path, Some(iface), method, body)
            .await
            .unwrap_or_else(|e| panic!("{iface}.{method} on {path}: {e}"))
    }

    /// Adds adapter `name` (e.g. `hci0`).
    pub async fn add_adapter(&self, name: &str) {
        self.call(
            "/org/bluez",
            "org.bluez.Mock",
            "AddAdapter",
            &(name, "venue"),
        )
        .await;
    }

    /// Removes adapter `name` and its devices.
    pub async fn remove_adapter(&self, name: &str) {
        self.call(
            "/org/bluez",
            "org.bluez.Mock",
            "RemoveAdapterWithDevices",
            &(name,),
        )
        .await;
    }

    /// Adds a device; returns its object path.
    pub async fn add_device(&self, adapter: &str, address: &str) -> String {
        let reply = self
            .call(
                "/org/bluez",
                "org.bluez.Mock",
                "AddDevice",
                &(adapter, address, "phone"),
            )
            .await;
        reply.body().deserialize::<String>().expect("device path")
    }

    /// BlueZ forgets a device (as it does ~30 s after its last advert).
    pub async fn remove_device(&self, adapter: &str, device_path: &str) {
        let path = zbus::ObjectPath::try_from(device_path).expect("path");
        self.call(
            &format!("/org/bluez/{adapter}"),
            "org.bluez.Adapter1",
            "RemoveDevice",
            &(path,),
        )
        .await;
    }

    /// One advert heard: one PropertiesChanged with the RSSI and the service data, as
    /// bluetoothd sends it with DuplicateData. (Emitted through the mock's `EmitSignal`: its
    /// `UpdateProperties` cannot take dictionaries such as ServiceData.)
    pub async fn advert(&self, device_path: &str, rssi: i16, service_uuid: &str, data: &[u8]) {
        let mut service_data: HashMap<String, Value> = HashMap::new();
        service_data.insert(service_uuid.to_owned(), Value::from(data.to_vec()));
        let mut props: HashMap<&str, Value> = HashMap::new();
        props.insert("RSSI", Value::from(rssi));
        props.insert("ServiceData", Value::from(service_data));
        let args: Vec<Value> = vec![
            Value::from("org.bluez.Device1"),
            Value::from(props),
            Value::from(Vec::<String>::new()),
        ];
        self.call(
            device_path,
            "org.freedesktop.DBus.Mock",
            "EmitSignal",
            &(
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                "sa{sv}as",
                args,
            ),
        )
        .await;
    }

    /// One advert of a BlueTrace (OpenTrace) phone: RSSI, its service UUID in the UUID list and
    /// manufacturer data of company 0x03FF (three random characters), in one PropertiesChanged.
    pub async fn bluetrace_advert(&self, device_path: &str, rssi: i16, service_uuid: &str) {
        let mut manufacturer: HashMap<u16, Value> = HashMap::new();
        manufacturer.insert(BLUETRACE_COMPANY, Value::from(b"xyz".to_vec()));
        let mut props: HashMap<&str, Value> = HashMap::new();
        props.insert("RSSI", Value::from(rssi));
        props.insert("UUIDs", Value::from(vec![service_uuid.to_owned()]));
        props.insert("ManufacturerData", Value::from(manufacturer));
        let args: Vec<Value> = vec![
            Value::from("org.bluez.Device1"),
            Value::from(props),
            Value::from(Vec::<String>::new()),
        ];
        self.call(
            device_path,
            "org.freedesktop.DBus.Mock",
            "EmitSignal",
            &(
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                "sa{sv}as",
                args,
            ),
        )
        .await;
    }

    /// Makes a device a GATT peripheral behaving as `behaviour`. Every phone also gets a
    /// Generic Access service (0x1800) with a Device Name characteristic, as phones have, so
    /// the reader has to pick the right service.
    pub async fn gatt_phone(&self, device_path: &str, behaviour: &GattBehaviour) {
        let (resolves, refuses) = match behaviour {
            GattBehaviour::Answers { .. } => (true, false),
            GattBehaviour::NeverResolves => (false, false),
            GattBehaviour::Refuses => (false, true),
        };
        for (method, code) in [
            ("Connect", connect_code(resolves, refuses)),
            ("Disconnect", DISCONNECT_CODE.to_owned()),
        ] {
            self.call(
                device_path,
                "org.freedesktop.DBus.Mock",
                "AddMethod",
                &("org.bluez.Device1", method, "", "", code.as_str()),
            )
            .await;
        }
        self.add_gatt(
            device_path,
            1,
            "00001800-0000-1000-8000-00805f9b34fb",
            "00002a00-0000-1000-8000-00805f9b34fb",
            b"phone",
        )
        .await;
        if let GattBehaviour::Answers {
            service_uuid,
            characteristic_uuid,
            value,
        } = behaviour
        {
            self.add_gatt(device_path, 10, service_uuid, characteristic_uuid, value)
                .await;
        }
    }

    /// A primary service `service{handle:04x}` with one readable characteristic
    /// `char{handle+1:04x}` answering `value`, under a device (BlueZ's object layout).
    async fn add_gatt(
        &self,
        device_path: &str,
        handle: u16,
        service_uuid: &str,
        characteristic_uuid: &str,
        value: &[u8],
    ) {
        let service = format!("{device_path}/service{handle:04x}");
        let characteristic = format!("{service}/char{:04x}", handle + 1);
        let device = zbus::ObjectPath::try_from(device_path).expect("device path");
        let mut props: HashMap<&str, Value> = HashMap::new();
        props.insert("UUID", Value::from(service_uuid));
        props.insert("Device", Value::from(device));
        props.insert("Primary", Value::from(true));
        props.insert("Includes", Value::from(Vec::<zbus::ObjectPath<'_>>::new()));
        let no_methods: Vec<(&str, &str, &str, &str)> = Vec::new();
        self.call(
            "/",
            "org.freedesktop.DBus.Mock",
            "AddObject",
            &(
                service.as_str(),
                "org.bluez.GattService1",
                props,
                no_methods,
            ),
        )
        .await;
        let service_path = zbus::ObjectPath::try_from(service.as_str()).expect("service path");
        let mut props: HashMap<&str, Value> = HashMap::new();
        props.insert("UUID", Value::from(characteristic_uuid));
        props.insert("Service", Value::from(service_path));
        props.insert("Flags", Value::from(vec!["read", "write"]));
        let read = format!(
            "ret = dbus.ByteArray(bytes.fromhex('{}'))",
            hex::encode(value)
        );
        let methods = vec![("ReadValue", "a{sv}", "ay", read.as_str())];
        self.call(
            "/",
            "org.freedesktop.DBus.Mock",
            "AddObject",
            &(
                characteristic.as_str(),
                "org.bluez.GattCharacteristic1",
                props,
                methods,
            ),
        )
        .await;
    }

    /// How many times `method` was called on the object at `path` (the mock's call log).
    pub async fn calls(&self, path: &str, method: &str) -> usize {
        let reply = self
            .call(
                path,
                "org.freedesktop.DBus.Mock",
                "GetMethodCalls",
                &(method,),
            )
            .await;
        reply
            .body()
            .deserialize::<Vec<(u64, Vec<zbus::OwnedVariant>)>>()
            .expect("call log")
            .len()
    }

    /// Whether a device is connected now.
    pub async fn connected(&self, device_path: &str) -> bool {
        let v = self
            .get(device_path, "org.bluez.Device1", "Connected")
            .await;
        bool::try_from(v).expect("Connected is a boolean")
    }

    /// The most devices connected at once since the mock started (through
    /// [`gatt_phone`](Self::gatt_phone) devices).
    pub async fn peak_connections(&self) -> i32 {
        self.call(
            "/",
            "org.freedesktop.DBus.Mock",
            "AddMethod",
            &(
                "org.bluez.Mock",
                "GattPeak",
                "",
                "i",
                "ret = getattr(self, 'gatt_peak', 0)",
            ),
        )
        .await;
        let reply = self.call("/", "org.bluez.Mock", "GattPeak", &()).await;
        reply.body().deserialize::<i32>().expect("peak")
    }

    /// Sets properties of an object, emitting PropertiesChanged.
    pub async fn update(&self, path: &str, iface: &str, props: HashMap<&str, Value<'_>>) {
        self.call(
            path,
            "org.freedesktop.DBus.Mock",
            "UpdateProperties",
            &(iface, props),
        )
        .await;
    }

    /// Reads a property.
    pub async fn get(&self, path: &str, iface: &str, name: &str) -> zbus::OwnedVariant {
        let reply = self
            .call(
                path,
                "org.freedesktop.DBus.Properties",
                "Get",
                &(iface, name),
            )
            .await;
        reply
            .body()
            .deserialize::<zbus::OwnedVariant>()
            .expect("property value")
    }

    /// Whether the adapter is discovering.
    pub async fn discovering(&self, adapter: &str) -> bool {
        let v = self
            .get(
                &format!("/org/bluez/{adapter}"),
                "org.bluez.Adapter1",
                "Discovering",
            )
            .await;
        bool::try_from(v).expect("Discovering is a boolean")
    }

    /// Stops discovery as another program (or a powered-off adapter) would.
    pub async fn stop_discovery(&self, adapter: &str) {
        self.call(
            &format!("/org/bluez/{adapter}"),
            "org.bluez.Adapter1",
            "StopDiscovery",
            &(),
        )
        .await;
    }
}

/// BlueTrace's manufacturer id (company 0x03FF).
pub const BLUETRACE_COMPANY: u16 = 0x03FF;

/// How a mock phone behaves when the gateway connects.
#[derive(Clone, Debug)]
pub enum GattBehaviour {
    /// Connects, resolves its services; `ReadValue` of the characteristic answers `value`.
    Answers {
        /// The service holding the characteristic.
        service_uuid: String,
        /// The characteristic.
        characteristic_uuid: String,
        /// What a read returns.
        value: Vec<u8>,
    },
    /// Connects but its services never resolve (a phone that went out of range mid-way).
    NeverResolves,
    /// `Connect` fails (`org.bluez.Error.Failed`, as BlueZ's le-connection-abort-by-local).
    Refuses,
}

/// Python for a device's `Connect`: counts connections on the root object (now and peak).
fn connect_code(resolves: bool, refuses: bool) -> String {
    let refuse = if refuses {
        "raise dbus.exceptions.DBusException('le-connection-abort-by-local', \
         name='org.bluez.Error.Failed')\n"
    } else {
        ""
    };
    format!(
        "{refuse}\
         if self.props['org.bluez.Device1']['Connected']:\n\
         \x20   raise dbus.exceptions.DBusException('Already Connected', \
         name='org.bluez.Error.AlreadyConnected')\n\
         root = objects['/']\n\
         root.gatt_now = getattr(root, 'gatt_now', 0) + 1\n\
         root.gatt_peak = max(getattr(root, 'gatt_peak', 0), root.gatt_now)\n\
         self.UpdateProperties('org.bluez.Device1', {{'Connected': dbus.Boolean(True), \
         'ServicesResolved': dbus.Boolean({})}})\n",
        if resolves { "True" } else { "False" }
    )
}

/// Python for a device's `Disconnect` (never fails, as BlueZ's does not for a device that is
/// not connected).
const DISCONNECT_CODE: &str = "if self.props['org.bluez.Device1']['Connected']:\n\
    \x20   objects['/'].gatt_now -= 1\n\
    self.UpdateProperties('org.bluez.Device1', {'Connected': dbus.Boolean(False), \
    'ServicesResolved': dbus.Boolean(False)})\n";

/// Polls `check` every 20 ms until true or `timeout`, then panics with `what`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
