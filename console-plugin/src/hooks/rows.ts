/* How a watch event changes the rows of a page: pure, so that it is tested alone. */

import { listKey } from '../format';
import { CatalogImage, WatchEvent } from '../model';

/** Applies a watch event to the rows of a page that ends (when `last` is set) at that key. */
export const applyEvent = (
  rows: CatalogImage[],
  event: WatchEvent,
  last?: string,
): { rows: CatalogImage[]; elsewhere: boolean } => {
  const key = listKey(event.object);
  const at = rows.findIndex((row) => listKey(row) === key);
  if (event.type === 'DELETED') {
    return { rows: at >= 0 ? rows.filter((_, i) => i !== at) : rows, elsewhere: false };
  }
  if (at >= 0) {
    return { rows: rows.map((row, i) => (i === at ? event.object : row)), elsewhere: false };
  }
  // New to this selection: shown if it sorts into this page, else counted.
  if (last !== undefined && key > last) {
    return { rows, elsewhere: event.type === 'ADDED' };
  }
  const after = rows.findIndex((row) => listKey(row) > key);
  const inserted = after < 0 ? [...rows, event.object] : [...rows.slice(0, after), event.object, ...rows.slice(after)];
  return { rows: inserted, elsewhere: false };
};

export type Rows = { items: CatalogImage[]; addedElsewhere: number };

export type RowsAction =
  | { type: 'page'; items: CatalogImage[] }
  | { type: 'event'; event: WatchEvent; last?: string };

export const rowsReducer = (rows: Rows, action: RowsAction): Rows => {
  if (action.type === 'page') {
    return { items: action.items, addedElsewhere: 0 };
  }
  const applied = applyEvent(rows.items, action.event, action.last);
  return { items: applied.rows, addedElsewhere: rows.addedElsewhere + (applied.elsewhere ? 1 : 0) };
};

