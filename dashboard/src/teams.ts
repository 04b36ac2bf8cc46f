// Teams in the dashboard: which team a new job or schedule goes to, team names beside jobs and agents, and what
// the Teams page's confirmations say. GET /api/teams already answers only the caller's teams (admins: all).
import type { Agent, Device, Team } from "./types";

/** The name rules of a team (those of people's names): 1..100 characters, a letter or digit first. */
export const TEAM_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
export const TEAM_NAME_MAX = 100;
/** The team 'default' (everything made before teams): it cannot be deleted. */
export const DEFAULT_TEAM_ID = 1;

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Teams in the order they were made (team 1, 'default', first): the pickers' order and the default's. */
export function sortTeams(teams: Team[]): Team[] {
  return [...teams].sort((a, b) => a.id - b.id);
}

/** A team's name for `id`, or "team 7" while the list does not (yet) name it. */
export function teamName(teams: Team[] | null, id: number | null | undefined): string {
  if (id == null) return "";
  return teams?.find((t) => t.id === id)?.name ?? `team ${id}`;
}

/** Whether the job and schedule forms ask for a team: only when the caller can use more than one. */
export function showTeamPicker(teams: Team[] | null): boolean {
  return (teams?.length ?? 0) > 1;
}

/** The form keys the team picker shows a server complaint beside: none while it is hidden, so a 422 about the
 * team is then shown with the form's general errors (never dropped). */
export function teamKeys(teams: Team[] | null): string[] {
  return showTeamPicker(teams) ? ["team_id"] : [];
}

/** The team a new job or schedule starts with: the only, else the first of the caller's teams; null while the list
 * is unknown (the server then decides, as for a caller with one team). */
export function defaultTeamId(teams: Team[] | null): number | null {
  return teams?.length ? sortTeams(teams)[0].id : null;
}

/** ``body`` with the picked team (none picked: the server's default for the caller). */
export function withTeam<T extends { team_id?: number | null }>(body: T, teamId: number | null): T {
  return teamId === null ? body : { ...body, team_id: teamId };
}

/** An agent's team; null from a server older than teams (its agents carry none). */
export function agentTeamId(agent: Agent): number | null {
  return agent.team_id ?? null;
}

/** The phones a job of ``teamId`` can run on (a phone's team is its agent's): every phone while the team, or an
 * agent's team, is unknown, so the form's counts never undercount. */
export function teamPhones(devices: Iterable<Device>, agents: Map<number, Agent>, teamId: number | null): Device[] {
  const all = [...devices];
  if (teamId === null) return all;
  return all.filter((d) => {
    const agent = agents.get(d.agent_id);
    const team = agent ? agentTeamId(agent) : null;
    return team === null || team === teamId;
  });
}

/** What is wrong with a team name as typed, in the words of the form; null when it is fine. */
export function teamNameError(name: string): string | null {
  const n = name.trim();
  if (!n) return "Enter a name";
  if (n.length > TEAM_NAME_MAX) return `At most ${TEAM_NAME_MAX} characters`;
  if (!TEAM_NAME_PATTERN.test(n)) return "Letters, digits, '_', '.' and '-' only, starting with a letter or digit";
  return null;
}

/** A person's name as typed for "Add member": null when it can be sent. */
export function memberNameError(name: string, team: Team): string | null {
  const n = name.trim();
  if (!n) return "Enter a person's name";
  if (team.members.includes(n)) return `${n} is already a member of ${team.name}`;
  return null;
}

/** Delete a team: says what goes and what stops it (the server refuses while the team owns anything). */
export function deleteTeamText(team: Team): string {
  const n = team.members.length;
  const members = n ? ` Its ${plural(n, "member")} ${n === 1 ? "leaves" : "leave"} it; ` +
    `${n === 1 ? "their account stays" : "their accounts stay"}.` : "";
  const agents = team.agents
    ? ` It still has ${plural(team.agents, "agent")}: move them to another team first, or the server refuses.`
    : " A team that still owns jobs or schedules cannot be deleted: the server says so.";
  return `This deletes team ${team.name}.${members}${agents}`;
}

/** Remove a person from a team: they stop seeing its jobs, phones and schedules at once. */
export function removeMemberText(person: string, team: Team): string {
  return `${person} stops seeing team ${team.name}'s jobs, phones and schedules at once ` +
    `(their own account and other teams stay).`;
}

/** Move an agent: its phones go with it and run only the new team's jobs; runs already running finish. */
export function moveAgentText(agent: Agent, from: string | null, to: string): string {
  const phones = plural(agent.device_count ?? 0, "connected phone");
  return `This moves agent ${agent.name} and its ${phones}${from ? ` from team ${from}` : ""} to team ${to}. ` +
    `From now on its phones run only team ${to}'s jobs, and only ${to}'s people see them; runs already running ` +
    `finish where they are.`;
}

/** One line per team for the list: "3 members · 2 agents". */
export function teamSummary(team: Team): string {
  return `${plural(team.members.length, "member")} · ${plural(team.agents, "agent")}`;
}
