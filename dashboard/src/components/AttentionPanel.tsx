import { attentionSummary } from "../fleetHealth";
import { agoText } from "../logic";
import type { Store } from "../store";

/** Rows shown before "and N more": the panel stays compact above the jobs. */
const SHOWN = 8;

/**
 * The phones that need a look (GET /api/fleet/health, refetched as phones' health changes), worst first, each
 * with its reason and a link to its page. Nothing is shown while nothing is wrong.
 */
export function AttentionPanel({ store }: { store: Store }) {
  const items = store.attention;
  if (!items || items.length === 0) return null;
  const shown = items.slice(0, SHOWN);
  return (
    <section class="attention-panel" aria-labelledby="attention-title" data-testid="attention">
      <div class="attention-head">
        <h2 id="attention-title">Needs attention</h2>
        <span data-testid="attention-summary">{attentionSummary(items)}</span>
        <a href="#/phones?show=attention">Phones needing attention</a>
      </div>
      <ul>
        {shown.map((i) => (
          <li key={`${i.device_id}:${i.problem}`} data-testid="attention-item" data-serial={i.serial}
            data-problem={i.problem}>
            <span class={`badge badge-problem badge-${i.problem}`}>{i.problem}</span>
            <a class="mono" href={`#/phones/${i.device_id}`}>{i.serial}</a>
            <span class="attention-reason" title={i.reason ?? undefined}>{i.reason ?? "–"}</span>
            <span class="muted">{i.agent_name}{i.since ? ` · since ${agoText(i.since)}` : ""}</span>
          </li>
        ))}
      </ul>
      {items.length > shown.length && <p class="muted more">and {items.length - shown.length} more</p>}
    </section>
  );
}
