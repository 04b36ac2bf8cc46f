import { useEffect, useMemo, useState } from "preact/hooks";
import type { Api, ApiError } from "../api";
import type { Store } from "../store";
import {
  agentTeamId, DEFAULT_TEAM_ID, deleteTeamText, memberNameError, moveAgentText, removeMemberText, teamName, teamNameError, teamSummary,
} from "../teams";
import type { Agent, Team } from "../types";
import { Confirm } from "./Confirm";

/** What is being confirmed: a team's deletion, a member's removal, or an agent's move. */
type Asking =
  | { kind: "delete"; team: Team }
  | { kind: "remove"; team: Team; person: string }
  | { kind: "move"; agent: Agent; to: Team };

/**
 * Everyone's teams (name, members, agents); an admin also makes, renames and deletes teams, adds and removes
 * members and moves agents between teams. The server's refusals (a 409 on deleting a team that still owns
 * something, a 404 on an unknown person) are shown as it words them.
 */
export function TeamsPage({ api, store, onAgentsChanged }:
  { api: Api; store: Store; onAgentsChanged: () => void }) {
  const admin = api.can("admin");
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [asking, setAsking] = useState<Asking | null>(null);
  const [people, setPeople] = useState<string[]>([]);
  const teams = store.teams;

  async function reload() {
    try {
      store.setTeams(await api.teams());
    } catch (e) {
      setError(`Teams: ${(e as ApiError).message}`);
    }
  }
  useEffect(() => {
    void reload();
    if (admin) api.people().then((list) => setPeople(list.map((p) => p.name).sort()), () => setPeople([]));
  }, []);

  /** Runs a change; its answer (or refusal) shows at the top of the page. */
  async function act(what: string, fn: () => Promise<string | null>): Promise<boolean> {
    setError(null);
    setNotice(null);
    try {
      setNotice(await fn());
      return true;
    } catch (e) {
      setError(`${what}: ${(e as ApiError).message}`);
      return false;
    }
  }

  function confirmed(a: Asking) {
    if (a.kind === "delete") {
      void act(`Delete team ${a.team.name}`, async () => {
        await api.deleteTeam(a.team.id);
        store.teamDeleted(a.team.id);
        return `Team ${a.team.name} deleted.`;
      });
    } else if (a.kind === "remove") {
      void act(`Remove ${a.person} from ${a.team.name}`, async () => {
        store.putTeam(await api.removeMember(a.team.id, a.person));
        return `${a.person} left team ${a.team.name}.`;
      });
    } else {
      void act(`Move agent ${a.agent.name}`, async () => {
        await api.moveAgent(a.agent.id, a.to.id);
        await reload(); // both teams' agent counts changed
        onAgentsChanged();
        return `Agent ${a.agent.name} moved to team ${a.to.name}.`;
      });
    }
  }

  return (
    <section aria-labelledby="teams-title">
      <div class="page-head">
        <h1 id="teams-title">Teams</h1>
      </div>
      <p class="muted small-text">
        {admin ? "Agents (and so their phones), jobs and schedules belong to a team; people see and act on their " +
          "teams only. As an admin you see every team."
          : "You see the jobs, phones and schedules of these teams only."}
      </p>
      {error && <p class="field-error" role="alert" data-testid="teams-error">{error}</p>}
      {notice && <p class="notice" role="status" data-testid="teams-notice">{notice}</p>}
      {admin && <NewTeamForm onCreate={(name) => act(`New team ${name}`, async () => {
        store.putTeam(await api.createTeam({ name }));
        return `Team ${name} created.`;
      })} />}
      {teams === null ? <p class="muted">Loading teams…</p> : teams.length === 0
        ? <p class="empty" data-testid="no-teams">You belong to no team yet: an admin adds you to one.</p>
        : (
          <ul class="teams" data-testid="teams">
            {teams.map((t) => (
              <TeamCard key={t.id} team={t} admin={admin} people={people}
                onRename={(name) => act(`Rename team ${t.name}`, async () => {
                  store.putTeam(await api.patchTeam(t.id, { name }));
                  return `Team ${t.name} is now ${name}.`;
                })}
                onAdd={(person) => act(`Add ${person} to ${t.name}`, async () => {
                  store.putTeam(await api.addMember(t.id, person));
                  return `${person} joined team ${t.name}.`;
                })}
                onRemove={(person) => setAsking({ kind: "remove", team: t, person })}
                onDelete={() => setAsking({ kind: "delete", team: t })} />
            ))}
          </ul>
        )}
      {admin && teams && teams.length > 0 && (
        <MoveAgent agents={[...store.agents.values()]} teams={teams}
          onMove={(agent, to) => setAsking({ kind: "move", agent, to })} />
      )}
      {asking && <AskFirst asking={asking} teams={teams} onConfirm={() => confirmed(asking)}
        onClose={() => setAsking(null)} />}
    </section>
  );
}

function AskFirst({ asking, teams, onConfirm, onClose }:
  { asking: Asking; teams: Team[] | null; onConfirm: () => void; onClose: () => void }) {
  if (asking.kind === "delete") {
    return <Confirm title={`Delete team ${asking.team.name}?`} message={deleteTeamText(asking.team)}
      action="Delete team" onConfirm={onConfirm} onClose={onClose} />;
  }
  if (asking.kind === "remove") {
    return <Confirm title={`Remove ${asking.person} from team ${asking.team.name}?`}
      message={removeMemberText(asking.person, asking.team)} action="Remove member" onConfirm={onConfirm}
      onClose={onClose} />;
  }
  const from = agentTeamId(asking.agent);
  return <Confirm title={`Move agent ${asking.agent.name} to team ${asking.to.name}?`}
    message={moveAgentText(asking.agent, from === null ? null : teamName(teams, from), asking.to.name)}
    action="Move agent" onConfirm={onConfirm} onClose={onClose} />;
}

function NewTeamForm({ onCreate }: { onCreate: (name: string) => Promise<boolean> }) {
  const [name, setName] = useState("");
  const [wrong, setWrong] = useState<string | null>(null);
  async function submit(e: Event) {
    e.preventDefault();
    const bad = teamNameError(name);
    setWrong(bad);
    if (bad) return;
    if (await onCreate(name.trim())) setName("");
  }
  return (
    <form class="toolbar" onSubmit={submit} noValidate data-testid="new-team-form">
      <label for="new-team-name">New team</label>
      <input id="new-team-name" placeholder="name, e.g. qa-berlin" value={name} data-testid="new-team-name"
        aria-invalid={wrong ? true : undefined} aria-describedby={wrong ? "err-new-team" : undefined}
        onInput={(e) => { setName((e.target as HTMLInputElement).value); setWrong(null); }} />
      <button type="submit" data-testid="create-team">Create team</button>
      {wrong && <span id="err-new-team" class="field-error" role="alert">{wrong}</span>}
    </form>
  );
}

function TeamCard({ team, admin, people, onRename, onAdd, onRemove, onDelete }: {
  team: Team; admin: boolean; people: string[];
  onRename: (name: string) => Promise<boolean>; onAdd: (person: string) => Promise<boolean>;
  onRemove: (person: string) => void; onDelete: () => void;
}) {
  const [renaming, setRenaming] = useState<string | null>(null);
  const [adding, setAdding] = useState("");
  const [wrong, setWrong] = useState<{ rename?: string; add?: string }>({});
  const candidates = useMemo(() => people.filter((p) => !team.members.includes(p)), [people, team.members]);
  const kept = team.id === DEFAULT_TEAM_ID; // the server refuses to delete it (409)

  async function rename(e: Event) {
    e.preventDefault();
    const name = (renaming ?? "").trim();
    const bad = teamNameError(name);
    setWrong({ rename: bad ?? undefined });
    if (bad) return;
    if (name === team.name || await onRename(name)) setRenaming(null);
  }
  async function add(e: Event) {
    e.preventDefault();
    const bad = memberNameError(adding, team);
    setWrong({ add: bad ?? undefined });
    if (bad) return;
    if (await onAdd(adding.trim())) setAdding("");
  }

  return (
    <li class="team" data-testid="team" data-team={team.name}>
      <div class="team-head">
        {renaming === null ? (
          <h2 data-testid="team-name">{team.name}</h2>
        ) : (
          <form class="toolbar" onSubmit={rename} noValidate>
            <label for={`rename-${team.id}`} class="sr-only">New name of {team.name}</label>
            <input id={`rename-${team.id}`} value={renaming} data-testid="rename-input"
              onInput={(e) => setRenaming((e.target as HTMLInputElement).value)} />
            <button type="submit" class="small" data-testid="rename-save">Save</button>
            <button type="button" class="ghost small"
              onClick={() => { setRenaming(null); setWrong({}); }}>Cancel</button>
          </form>
        )}
        {admin && renaming === null && (
          <span class="toolbar-end">
            <button type="button" class="ghost small" onClick={() => setRenaming(team.name)}
              aria-label={`Rename team ${team.name}`} data-testid="rename">Rename</button>
            <button type="button" class="danger small" onClick={onDelete} disabled={kept}
              title={kept ? "The team 'default' holds everything made before teams: it cannot be deleted" : undefined}
              aria-label={`Delete team ${team.name}`} data-testid="delete-team">Delete</button>
          </span>
        )}
      </div>
      {wrong.rename && <p class="field-error" role="alert">{wrong.rename}</p>}
      <p class="muted small-text team-summary" data-testid="team-summary">{teamSummary(team)}</p>
      <h3 class="sr-only">Members of {team.name}</h3>
      {team.members.length === 0 ? <p class="muted small-text">No members yet.</p> : (
        <ul class="members" data-testid="members">
          {team.members.map((m) => (
            <li key={m} class="member" data-testid="member" data-member={m}>
              <span data-testid="member-name">{m}</span>
              {admin && (
                <button type="button" class="ghost small" onClick={() => onRemove(m)}
                  aria-label={`Remove ${m} from ${team.name}`} data-testid="remove-member">×</button>
              )}
            </li>
          ))}
        </ul>
      )}
      {admin && (
        <form class="toolbar" onSubmit={add} noValidate>
          <label for={`add-${team.id}`} class="sr-only">Add a person to {team.name}</label>
          <input id={`add-${team.id}`} list={`people-${team.id}`} placeholder="person's name" value={adding}
            data-testid="add-member-name"
            onInput={(e) => { setAdding((e.target as HTMLInputElement).value); setWrong({}); }} />
          <datalist id={`people-${team.id}`}>{candidates.map((p) => <option key={p} value={p} />)}</datalist>
          <button type="submit" class="small" data-testid="add-member">Add member</button>
        </form>
      )}
      {wrong.add && <p class="field-error" role="alert">{wrong.add}</p>}
    </li>
  );
}

/** An admin moves an agent (and its phones) to another team. */
function MoveAgent({ agents, teams, onMove }:
  { agents: Agent[]; teams: Team[]; onMove: (agent: Agent, to: Team) => void }) {
  const sorted = useMemo(() => [...agents].sort((a, b) => a.name.localeCompare(b.name)), [agents]);
  const [agentId, setAgentId] = useState<number | null>(null);
  const [teamId, setTeamId] = useState<number>(teams[0].id);
  const agent = sorted.find((a) => a.id === agentId) ?? sorted[0];
  const to = teams.find((t) => t.id === teamId) ?? teams[0];
  if (!sorted.length) return <p class="muted">No agent has registered yet: nothing to move.</p>;
  return (
    <form class="toolbar move-agent" data-testid="move-agent"
      onSubmit={(e) => { e.preventDefault(); onMove(agent, to); }}>
      <h2 class="subhead">Move an agent</h2>
      <label for="move-agent-name">Agent</label>
      <select id="move-agent-name" value={agent.id} data-testid="move-agent-name"
        onChange={(e) => setAgentId(Number((e.target as HTMLSelectElement).value))}>
        {sorted.map((a) => {
          const team = agentTeamId(a);
          return <option key={a.id} value={a.id}>{a.name}{team === null ? "" : ` (${teamName(teams, team)})`}</option>;
        })}
      </select>
      <label for="move-agent-team">to team</label>
      <select id="move-agent-team" value={to.id} data-testid="move-agent-team"
        onChange={(e) => setTeamId(Number((e.target as HTMLSelectElement).value))}>
        {teams.map((t) => <option key={t.id} value={t.id}>{t.name}</option>)}
      </select>
      <button type="submit" data-testid="move-agent-submit">Move…</button>
    </form>
  );
}
