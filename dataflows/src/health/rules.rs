//! The health alert rule (CONTRACT §7): `health.contact` (warning) — a person who shared a
//! trip or a venue with an active case ([`crate::health`] says exactly when). Present while
//! the contact is: raised when the contact is found, cleared at the event time its case is
//! cleared (or a record it rests on reaches the end of its retention). The alert carries the
//! contact's pseudonym, the trip or venue and the date, never a clear id; its cell is the cell
//! of the contact's latest check-in, so it reaches that cell's officers.

use crate::alerts::{AlertKey, Rule, Subject};
use crate::health::{Contact, Via};
use crate::time::Ms;
use differential_dataflow::VecCollection;

/// The alert key of a contact.
pub fn contact_key(c: &Contact) -> AlertKey {
    let (trip, venue) = match &c.via {
        Via::Trip(t) => (Some(t.clone()), None),
        Via::Venue(v) => (None, Some(v.clone())),
    };
    AlertKey {
        rule: Rule::HealthContact,
        subject: Subject::Contact {
            person: c.person.clone(),
            trip,
            venue,
            date: c.date.clone(),
            cell: c.cell,
        },
    }
}

/// Every health alert rule over the domain's collections.
pub fn alerts<'s>(contacts: VecCollection<'s, Ms, Contact>) -> VecCollection<'s, Ms, AlertKey> {
    contacts.map(|c| contact_key(&c)).distinct()
}
