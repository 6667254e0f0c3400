//! Sending the converted objects to 0.16 while it runs in recovery mode (upstream's
//! `stalwart-cli apply`), then queueing the quota recalculation.
//!
//! Facts (crossing.md section 3): one `x:<Object>/set` per operation, `#<creation id>`
//! references resolved through the request's `createdIds`; `restore-<id>` creation ids keep
//! the 0.15 account ids only in recovery mode; any `notCreated`/`notUpdated` or method error
//! fails the step (and the crossing rolls back to 0.15 from the snapshot). The migration wiped
//! the used-quota counters: `StoreMaintenance resetUserQuotas` rebuilds them, as a task that
//! runs at the first normal start (recovery mode runs no tasks).

use super::convert::Op;
use crate::server::webadmin::{Api, WebadminError};
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("0.16 refused {object} {id}: {why}")]
    Refused {
        object: String,
        id: String,
        why: String,
    },
    #[error("0.16's answer to {object}/set is not understood: {answer}")]
    Answer { object: String, answer: String },
    #[error(transparent)]
    Api(#[from] WebadminError),
}

/// What the server created (creation id -> server id), for the journal and the report.
pub type Created = Map<String, Value>;

pub fn apply(api: &Api, ops: &[Op]) -> Result<Created, ApplyError> {
    let quota_task = Op::Create {
        object: "Task".into(),
        items: vec![(
            "quota".into(),
            json!({"@type": "StoreMaintenance", "maintenanceType": "resetUserQuotas"}),
        )],
    };
    let mut created = Created::new();
    for op in ops.iter().chain(std::iter::once(&quota_task)) {
        let (object, args) = match op {
            Op::Create { object, items } => {
                let map: Map<String, Value> = items.iter().cloned().collect();
                (object, json!({"create": map}))
            }
            Op::Update { object, value } => (object, json!({"update": {"singleton": value}})),
        };
        let answer = api.jmap(json!([[format!("x:{object}/set"), args, "0"]]), &created)?;
        check(object, op, &answer, &mut created)?;
    }
    Ok(created)
}

/// Every object of `op` was created (or the singleton updated); records the new ids.
fn check(object: &str, op: &Op, answer: &Value, created: &mut Created) -> Result<(), ApplyError> {
    let resp = &answer["methodResponses"][0];
    let bad = || ApplyError::Answer {
        object: object.into(),
        answer: answer.to_string(),
    };
    if resp[0] == "error" {
        return Err(ApplyError::Refused {
            object: object.into(),
            id: "(the whole call)".into(),
            why: resp[1].to_string(),
        });
    }
    let result = &resp[1];
    for key in ["notCreated", "notUpdated"] {
        if let Some((id, why)) = result
            .get(key)
            .and_then(Value::as_object)
            .and_then(|m| m.iter().next())
        {
            return Err(ApplyError::Refused {
                object: object.into(),
                id: id.clone(),
                why: why.to_string(),
            });
        }
    }
    match op {
        Op::Create { items, .. } => {
            let got = result
                .get("created")
                .and_then(Value::as_object)
                .ok_or_else(bad)?;
            for (cid, _) in items {
                let id =
                    got.get(cid)
                        .and_then(|o| o.get("id"))
                        .ok_or_else(|| ApplyError::Refused {
                            object: object.into(),
                            id: cid.clone(),
                            why: "not in the answer's `created`".into(),
                        })?;
                created.insert(cid.clone(), id.clone());
            }
        }
        Op::Update { .. } => {
            result.get("updated").ok_or_else(bad)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(items: &[&str]) -> Op {
        Op::Create {
            object: "Account".into(),
            items: items.iter().map(|c| (c.to_string(), json!({}))).collect(),
        }
    }

    #[test]
    fn created_ids_are_recorded_and_refusals_name_the_object() {
        let mut created = Created::new();
        let ok = json!({"methodResponses": [["x:Account/set", {"created": {"restore-3": {"id": "d3"}}}, "0"]]});
        check("Account", &create(&["restore-3"]), &ok, &mut created).unwrap();
        assert_eq!(created["restore-3"], "d3");
        let refused = json!({"methodResponses": [["x:Account/set", {"created": {}, "notCreated": {"restore-4": {"type": "invalidProperties", "description": "weak"}}}, "0"]]});
        let e = check("Account", &create(&["restore-4"]), &refused, &mut created).unwrap_err();
        assert!(
            e.to_string().contains("restore-4") && e.to_string().contains("weak"),
            "{e}"
        );
        let missing = json!({"methodResponses": [["x:Account/set", {"created": {}}, "0"]]});
        assert!(check("Account", &create(&["restore-5"]), &missing, &mut created).is_err());
        let method_error = json!({"methodResponses": [["error", {"type": "forbidden"}, "0"]]});
        assert!(check("Account", &create(&["x"]), &method_error, &mut created).is_err());
    }
}
