//! `/v1/coordinate/*` (Consul's `coordinate_endpoint.go`) and the `?near=` sort of the catalog and health
//! reads. Coordinates are LAN coordinates from the replicated catalog (one per node); JSON as Consul's
//! `structs.Coordinate` / `coordinate.Coordinate` (`{Node, Segment, Coord: {Vec, Error, Adjustment, Height}}`).

use super::catalog::{body_bytes, params, put_only, read_parts};
use super::decode::{parse_body, Obj};
use super::params::Params;
use super::reply::{empty, json, with_meta, HttpError, HttpResult};
use super::{AppState, Backend};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use concord_core::api::{CatalogQuery, CatalogResult, Request, Response as NodeResponse};
use concord_core::coordinate::{Coordinate, CoordinateConfig};
use concord_core::state::{fold, same_name, CoordinateUpdate};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CoordJson<'a> {
    vec: &'a [f64],
    error: f64,
    adjustment: f64,
    height: f64,
}

impl<'a> From<&'a Coordinate> for CoordJson<'a> {
    fn from(c: &'a Coordinate) -> Self {
        CoordJson {
            vec: &c.vec,
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CoordinateEntryJson<'a> {
    node: &'a str,
    segment: &'a str,
    coord: CoordJson<'a>,
}

fn entries(coords: &[(String, Coordinate)]) -> Vec<CoordinateEntryJson<'_>> {
    coords
        .iter()
        .map(|(node, c)| CoordinateEntryJson {
            node,
            segment: "",
            coord: c.into(),
        })
        .collect()
}

fn respond(result: HttpResult) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/coordinate/nodes`: every node's LAN coordinate (`[]` when none), blocking and consistency
/// modes as every read.
pub(crate) async fn nodes<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            let (meta, result) = read_parts(&state, &params, CatalogQuery::Coordinates).await?;
            let CatalogResult::Coordinates(coords) = &*result else {
                return Err(HttpError::unexpected());
            };
            Ok(with_meta(json(&entries(coords), params.pretty()), &meta))
        }
        .await,
    )
}

/// `GET /v1/coordinate/node/:node`: that node's coordinates (one per segment: one here); 404 without one.
pub(crate) async fn node<B: Backend>(State(state): State<AppState<B>>, Path(node): Path<String>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            let (meta, result) = read_parts(&state, &params, CatalogQuery::Coordinates).await?;
            let CatalogResult::Coordinates(coords) = &*result else {
                return Err(HttpError::unexpected());
            };
            let mine: Vec<(String, Coordinate)> = coords.iter().filter(|(n, _)| same_name(n, &node)).cloned().collect();
            if mine.is_empty() {
                return Ok(with_meta(empty(StatusCode::NOT_FOUND), &meta));
            }
            Ok(with_meta(json(&entries(&mine), params.pretty()), &meta))
        }
        .await,
    )
}

/// `GET /v1/coordinate/datacenters`: the WAN coordinates of each known datacenter's servers (from this
/// server's WAN pool; LAN and WAN coordinates never mix), datacenters by name, the local one always listed.
pub(crate) async fn datacenters<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    let params = match Params::parse(&uri) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct DatacenterMap<'a> {
        datacenter: &'a str,
        #[serde(rename = "AreaID")]
        area_id: &'a str,
        coordinates: Vec<CoordinateEntryJson<'a>>,
    }
    let wan = state.backend.wan_coordinates().await;
    let mut by_dc: BTreeMap<&str, Vec<CoordinateEntryJson<'_>>> = BTreeMap::new();
    by_dc.entry(state.settings.datacenter.as_str()).or_default();
    for (dc, node, coord) in &wan {
        by_dc.entry(dc.as_str()).or_default().push(CoordinateEntryJson {
            node,
            segment: "",
            coord: coord.into(),
        });
    }
    let maps: Vec<DatacenterMap<'_>> = by_dc
        .into_iter()
        .map(|(datacenter, coordinates)| DatacenterMap {
            datacenter,
            area_id: "WAN",
            coordinates,
        })
        .collect();
    json(&maps, params.pretty())
}

/// Parse `{Node, Segment, Coord: {Vec, Error, Adjustment, Height}}` (any key casing).
fn parse_update(body: &[u8]) -> Result<CoordinateUpdate, String> {
    let value = parse_body(body)?;
    let obj = Obj::new(&value)?;
    let node = obj.str("Node")?;
    let Some(coord) = obj.get(&["Coord"]) else {
        return Err("Missing coordinate".into());
    };
    let coord = Obj::new(coord)?;
    let num = |name: &str| -> Result<f64, String> {
        match coord.get(&[name]) {
            None => Ok(0.0),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("Request decode failed: Coord.{name}: expected a number")),
        }
    };
    let vec = match coord.get(&["Vec"]) {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<f64>>>())
            .ok_or("Request decode failed: Coord.Vec: expected an array of numbers")?,
    };
    Ok(CoordinateUpdate {
        node,
        coord: Coordinate {
            vec,
            error: num("Error")?,
            adjustment: num("Adjustment")?,
            height: num("Height")?,
        },
    })
}

/// `PUT /v1/coordinate/update`: queue a node's coordinate (for nodes outside gossip) on the leader, which
/// writes it with the next batch (within `consul.coordinate.update_period`). 200 with an empty body as
/// Consul; a coordinate that is not valid in our 8-dimensional space is refused with a 400.
pub(crate) async fn update<B: Backend>(
    State(state): State<AppState<B>>,
    method: Method,
    uri: Uri,
    body: Body,
) -> Response {
    respond(
        async {
            put_only(&method)?;
            params(&state, &uri)?;
            let body = body_bytes(body, state.settings.http_max_body_size).await?;
            let update = parse_update(&body).map_err(HttpError::bad_request)?;
            if update.node.is_empty() {
                return Err(HttpError::bad_request("Must provide node"));
            }
            let ours = Coordinate::new(&CoordinateConfig::default());
            if !update.coord.is_compatible_with(&ours) || !update.coord.is_valid() {
                return Err(HttpError::bad_request("Rejected bad coordinate"));
            }
            match state
                .call(Request::CoordinateUpdate(update))
                .await
                .ok_or_else(HttpError::shutting_down)?
            {
                NodeResponse::Done => Ok(empty(StatusCode::OK)),
                NodeResponse::Error(e) => Err(e.into()),
                _ => Err(HttpError::unexpected()),
            }
        }
        .await,
    )
}

/// The coordinates a `?near=<node>|_agent` read sorts by: `None` without `?near`. Keyed by folded node
/// name: node names are case-insensitive.
pub(crate) struct Near {
    origin: Option<Coordinate>,
    coords: BTreeMap<String, Coordinate>,
}

impl Near {
    /// Read the coordinates if the request has `?near` (`_agent` is this agent's node), in the request's
    /// consistency mode, without blocking (the main read blocks).
    pub(crate) async fn read<B: Backend>(state: &AppState<B>, params: &Params) -> Result<Option<Near>, HttpError> {
        let Some(near) = params.value("near").filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let node = if near == "_agent" {
            state.backend.local().node().name
        } else {
            near.to_string()
        };
        let req = Request::Read {
            query: concord_core::api::Query::Catalog(CatalogQuery::Coordinates),
            mode: params.read_mode()?,
            block: None,
        };
        let coords = match state.call(req).await.ok_or_else(HttpError::shutting_down)? {
            NodeResponse::Catalog { result, .. } => match &*result {
                CatalogResult::Coordinates(c) => c
                    .iter()
                    .map(|(n, c)| (fold(n).into_owned(), c.clone()))
                    .collect::<BTreeMap<_, _>>(),
                _ => return Err(HttpError::unexpected()),
            },
            NodeResponse::Error(e) => return Err(e.into()),
            _ => return Err(HttpError::unexpected()),
        };
        Ok(Some(Near {
            origin: coords.get(&*fold(&node)).cloned(),
            coords,
        }))
    }

    /// Sort `items` (whose node `node_of` names) by estimated RTT from the `near` node, nodes without a
    /// coordinate last (Consul's `sortNodesByDistanceFrom`).
    pub(crate) fn sort<T: Copy>(&self, items: &mut Vec<T>, node_of: impl Fn(&T) -> &str) {
        let coords: Vec<Option<&Coordinate>> = items.iter().map(|t| self.coords.get(&*fold(node_of(t)))).collect();
        let order = concord_core::coordinate::near_order(self.origin.as_ref(), &coords);
        *items = order.into_iter().map(|i| items[i]).collect();
    }
}

/// Sort when `near` is given.
pub(crate) fn sort_near<T: Copy>(near: &Option<Near>, items: &mut Vec<T>, node_of: impl Fn(&T) -> &str) {
    if let Some(near) = near {
        near.sort(items, node_of);
    }
}
