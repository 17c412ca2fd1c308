//! Public health: the read model of the health dataflow's contacts and its routes (CONTRACT §8):
//! `GET /api/health/contacts` (ops; an officer within their cells) and the citizen's
//! self-check `POST /api/health/contact-check` (public, rate limited).
//!
//! # The read model
//!
//! [`HealthBoard`] folds the `Out::Health` records of each completed event time: a contact
//! found (+1) is kept under (person pseudonym, trip or venue, date), one retracted (−1) without
//! a replacement goes. It holds pseudonyms only (the decoder replaced the clear ids before the
//! dataflow saw them). `/ws/live` carries nothing personal: only `health_contacts`, the number
//! of current contacts (also the KPI `contacts`).
//!
//! # Who sees what
//!
//! `ops` sees every contact; an `officer` those whose cell (the cell of the contact's latest
//! check-in) is theirs, so not those without a cell; `ingest` reads nothing. A row names the
//! contact by pseudonym, the trip or venue, the date, cell and district — never the case that
//! made the contact.
//!
//! # The self-check
//!
//! `POST /api/health/contact-check` with `{"name": "…", "id_card": "…"}` needs no token. The
//! id-card number must be a valid GB 11643-1999 citizen number (18 characters: 17 digits and a
//! check digit, `0`–`9` or `X`); otherwise 400, and the message never quotes it. The number is
//! pseudonymized exactly as the decoder does ([`AppState::pseudonyms`]: the same key, trimmed
//! and upper-cased) and looked up; the answer has one shape whether or not the person is known
//! (`contact`, `trip`, `venue`, `date` of the latest contact on record, and advice in Chinese and
//! English), and the same work is done either way. The name is required but never stored,
//! logged or compared (the pseudonym of the id decides). Each client (peer IP address) has a
//! token bucket ([`ContactLimiter`]: `http.contact_check_per_minute`, burst
//! `http.contact_check_burst`); beyond it 429 with `Retry-After`. Behind a reverse proxy every
//! request comes from the proxy's address, so the limit is then shared: rate limit at the proxy
//! as well. When the server is not served with connection info (tests, embedders calling
//! [`app`](super::app) themselves) all clients share one bucket.

use super::{ApiError, AppState, Authed};
use crate::auth::Role;
use crate::hub::Scope;
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use citybrain_dataflows::CityModel;
use citybrain_dataflows::health::{Contact, HealthOut, Via};
use citybrain_dataflows::pipeline::Out;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A contact's key: (person pseudonym, trip or venue, date).
type Key = (String, Via, String);

/// The current contacts: the health part of the [`Board`](super::Board).
pub struct HealthBoard {
    city: Arc<CityModel>,
    contacts: BTreeMap<Key, Contact>,
    /// The board version at which the number of contacts last changed.
    count_changed: u64,
}

impl super::ReadModel for HealthBoard {
    fn apply(&mut self, v: u64, records: &[(Out, isize)]) -> bool {
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for (out, diff) in records {
            let Out::Health(HealthOut::Contact(c)) = out else { continue };
            let key = (c.person.clone(), c.via.clone(), c.date.clone());
            if *diff > 0 {
                found.push((key, &**c));
            } else {
                gone.push(key);
            }
        }
        let before = self.contacts.len();
        let mut changed = false;
        // Retractions first: a contact retracted and found again in one batch (another case, a
        // new cell) keeps the new version.
        for key in gone {
            changed |= self.contacts.remove(&key).is_some();
        }
        for (key, c) in found {
            if self.contacts.get(&key) != Some(c) {
                self.contacts.insert(key, c.clone());
                changed = true;
            }
        }
        if self.contacts.len() != before {
            self.count_changed = v;
        }
        changed
    }

    fn live(&self, since: Option<u64>, msg: &mut Map<String, Value>) {
        if since.is_none_or(|s| self.count_changed > s) {
            msg.insert("health_contacts".into(), self.contacts.len().into());
        }
    }
}

impl HealthBoard {
    /// An empty read model for `city`.
    pub fn new(city: Arc<CityModel>) -> HealthBoard {
        HealthBoard { city, contacts: BTreeMap::new(), count_changed: 0 }
    }

    /// The number of current contacts.
    pub(super) fn count(&self) -> i64 {
        self.contacts.len() as i64
    }

    /// The cell and district ids of a contact's cell.
    fn place(&self, c: &Contact) -> (Option<&str>, Option<&str>) {
        let cell = c.cell.and_then(|i| self.city.cells.get(i as usize));
        let district = cell.and_then(|cell| self.city.districts.get(cell.district as usize));
        (cell.map(|c| c.id.as_str()), district.map(|d| d.id.as_str()))
    }

    /// The contacts `scope` may see, by (person, trip or venue, date).
    fn rows(&self, scope: &Scope) -> Vec<ContactRow> {
        self.contacts
            .values()
            .filter_map(|c| {
                let (cell, district) = self.place(c);
                let visible = match scope {
                    Scope::All => true,
                    Scope::Cells(_) => cell.is_some_and(|id| scope.allows_cell(id)),
                };
                visible.then(|| {
                    let (trip, venue) = via(&c.via);
                    ContactRow {
                        person: c.person.clone(),
                        trip,
                        venue,
                        date: c.date.clone(),
                        cell: cell.map(str::to_string),
                        district: district.map(str::to_string),
                    }
                })
            })
            .collect()
    }

    /// The latest (by date) current contact of `person` (a pseudonym), if any. Scans the
    /// person's range of the map: the same work for a known and an unknown person.
    fn latest(&self, person: &str) -> Option<&Contact> {
        let lo = (person.to_string(), Via::Trip(String::new()), String::new());
        let hi = (format!("{person}\0"), Via::Trip(String::new()), String::new());
        self.contacts.range(lo..hi).map(|(_, c)| c).max_by(|a, b| a.date.cmp(&b.date))
    }
}

/// A contact's trip and venue (one of them is `None`).
fn via(v: &Via) -> (Option<String>, Option<String>) {
    match v {
        Via::Trip(t) => (Some(t.clone()), None),
        Via::Venue(v) => (None, Some(v.clone())),
    }
}

/// A row of `/api/health/contacts`: a current contact of an active case (the case itself is
/// not named).
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactRow {
    /// The contact's pseudonym (never a clear id).
    pub person: String,
    /// The trip they shared with a case, or null.
    pub trip: Option<String>,
    /// The venue they shared with a case, or null.
    pub venue: Option<String>,
    /// The local date of the contact's trip or check-in, `YYYY-MM-DD`.
    pub date: String,
    /// The cell of the contact's latest check-in with a cell, or null.
    pub cell: Option<String>,
    /// That cell's district, or null.
    pub district: Option<String>,
}

/// The body of `POST /api/health/contact-check`. (No `Debug`: it holds a name and a clear id.)
#[derive(Deserialize, ToSchema)]
pub struct ContactCheckBody {
    /// The person's name (required; never stored or logged).
    pub name: String,
    /// The 18-character id-card number (GB 11643-1999).
    pub id_card: String,
}

/// Advice in Chinese and English.
#[derive(Debug, Serialize, ToSchema)]
pub struct Advice {
    /// 中文.
    pub zh: &'static str,
    /// English.
    pub en: &'static str,
}

/// The answer of `POST /api/health/contact-check`: the same shape whether or not a contact is
/// on record.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactCheck {
    /// Whether a current contact with an active case is on record for this id.
    pub contact: bool,
    /// The shared trip of the latest contact, or null.
    pub trip: Option<String>,
    /// The shared venue of the latest contact, or null.
    pub venue: Option<String>,
    /// The date of the latest contact (`YYYY-MM-DD`), or null.
    pub date: Option<String>,
    /// What to do.
    pub advice: Advice,
}

/// The advice to a contact.
const ADVICE_CONTACT: Advice = Advice {
    zh: "您可能是确诊或疑似病例的密切接触者。请尽快向所在社区报备，居家观察；如出现发热、咳嗽等症状，请佩戴口罩前往就近发热门诊就诊。",
    en: "You may have been in close contact with a confirmed or suspected case. Please register \
         with your community (社区报备) as soon as possible and stay home for observation \
         (居家观察); if symptoms such as fever or cough appear, wear a mask and go to the nearest \
         fever clinic (发热门诊).",
};

/// The answer when no contact is on record.
const ADVICE_NONE: Advice = Advice {
    zh: "暂无您的密切接触记录。请继续做好个人防护，如出现症状请及时就医。",
    en: "No contact on record for you. Keep taking the usual precautions and see a doctor if \
         symptoms appear.",
};

/// The GB 11643-1999 weights of the first 17 digits.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// The check character for each remainder mod 11.
const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Why an id-card number is not valid (the messages never quote it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdCardError {
    /// Not 18 characters of 17 digits and a digit or `X`.
    Format,
    /// The check digit does not match the first 17 digits.
    CheckDigit,
}

impl std::fmt::Display for IdCardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdCardError::Format => {
                "id_card: an id-card number has 18 characters: 17 digits and a check digit (0-9 or X)"
            }
            IdCardError::CheckDigit => "id_card: the check digit does not match (mistyped number?)",
        })
    }
}

/// The GB 11643-1999 check character of the first 17 digits of `digits` (`None` unless they
/// are 17 ASCII digits).
pub fn id_card_check_digit(digits: &str) -> Option<char> {
    let b = digits.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b.iter().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    Some(CHECK[(sum % 11) as usize])
}

/// Validates an 18-character citizen id-card number (GB 11643-1999; surrounding whitespace
/// ignored, `x` taken as `X`).
pub fn validate_id_card(id: &str) -> Result<(), IdCardError> {
    let id = id.trim();
    if id.len() != 18 || !id.is_ascii() {
        return Err(IdCardError::Format);
    }
    let (digits, check) = id.split_at(17);
    let expected = id_card_check_digit(digits).ok_or(IdCardError::Format)?;
    let check = check.chars().next().map(|c| c.to_ascii_uppercase());
    match check {
        Some(c) if c == expected => Ok(()),
        Some(c) if c.is_ascii_digit() || c == 'X' => Err(IdCardError::CheckDigit),
        _ => Err(IdCardError::Format),
    }
}

/// The longest name accepted, in characters.
const MAX_NAME_CHARS: usize = 100;
/// Clients (addresses) the limiter remembers; beyond it the least recently seen are forgotten.
pub const MAX_LIMITED_CLIENTS: usize = 65_536;

/// A token bucket per client address for the public self-check, with bounded memory.
#[derive(Debug)]
pub struct ContactLimiter {
    /// Tokens a millisecond.
    rate: f64,
    /// The bucket's size.
    burst: f64,
    /// Clients remembered at most.
    max_clients: usize,
    /// Per client: tokens left and when they were counted.
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl ContactLimiter {
    /// `per_minute` requests a minute per client, in bursts of up to `burst` (each at least 1),
    /// remembering at most `max_clients` clients.
    pub fn new(per_minute: u32, burst: u32, max_clients: usize) -> ContactLimiter {
        ContactLimiter {
            rate: f64::from(per_minute.max(1)) / 60_000.0,
            burst: f64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `client` at `now`: `Err(wait)` when its bucket is empty, with the time
    /// until the next token.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&client) && buckets.len() >= self.max_clients {
            // Full buckets are as good as forgotten ones; then the least recently seen go.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_millis() as f64 * rate < burst
            });
            while buckets.len() >= self.max_clients {
                let Some(oldest) = buckets.iter().min_by_key(|(_, (_, at))| *at).map(|(ip, _)| *ip) else {
                    break;
                };
                buckets.remove(&oldest);
            }
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*at).as_millis() as f64;
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let ms = ((1.0 - *tokens) / self.rate).ceil();
            Err(Duration::from_millis(ms as u64))
        }
    }
}

/// The client's address: the peer of the connection when the server was served with
/// connection info (`into_make_service_with_connect_info`), else `None` (one shared bucket).
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// The health routes, with their OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(contacts)).routes(routes!(contact_check))
}

/// Current contacts of active cases (an officer: those in their cells), by pseudonym, trip or
/// venue, and date.
#[utoipa::path(get, path = "/api/health/contacts", security(("bearer" = [])),
    responses((status = 200, body = [ContactRow]), (status = 401), (status = 403)))]
async fn contacts(auth: Authed, State(s): State<AppState>) -> Result<Json<Vec<ContactRow>>, ApiError> {
    let scope = auth.require(&[Role::Officer])?.scope();
    Ok(Json(s.read_board().health.rows(&scope)))
}

/// A citizen's self-check (no token; rate limited per client): whether a contact with an active
/// case is on record for an id-card number. The name is never stored; the pseudonym of the
/// number decides.
#[utoipa::path(post, path = "/api/health/contact-check", request_body = ContactCheckBody,
    responses((status = 200, body = ContactCheck, description = "The same shape whether or not a contact is on record"),
        (status = 400, description = "Not a JSON body with `name` and `id_card`, or not a valid id-card number (never quoted)"),
        (status = 413, description = "Body too large"),
        (status = 429, description = "Too many checks from this client: retry after `Retry-After` seconds")))]
async fn contact_check(
    ClientIp(ip): ClientIp,
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let client = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if let Err(wait) = s.contact_limiter.check(client, Instant::now()) {
        return Err(ApiError::TooManyRequests(
            "too many checks: retry later".into(),
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        ));
    }
    // serde's messages may quote values: never pass them on.
    let body: ContactCheckBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::BadRequest("the body must be a JSON object with strings `name` and `id_card`".into())
    })?;
    let name_len = body.name.trim().chars().count();
    if name_len == 0 || name_len > MAX_NAME_CHARS {
        return Err(ApiError::BadRequest(format!("name: required, at most {MAX_NAME_CHARS} characters")));
    }
    validate_id_card(&body.id_card).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // From here on the same work whether the person is known or not.
    let pseudonym = s.pseudonyms.pseudonym(&body.id_card);
    drop(body);
    let found = s.read_board().health.latest(&pseudonym).map(|c| (via(&c.via), c.date.clone()));
    let answer = match found {
        Some(((trip, venue), date)) => {
            ContactCheck { contact: true, trip, venue, date: Some(date), advice: ADVICE_CONTACT }
        }
        None => ContactCheck { contact: false, trip: None, venue: None, date: None, advice: ADVICE_NONE },
    };
    let mut resp = Json(answer).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
