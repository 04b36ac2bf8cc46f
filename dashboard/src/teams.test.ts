import { describe, expect, it } from "vitest";
import {
  agentTeamId, defaultTeamId, deleteTeamText, memberNameError, moveAgentText, removeMemberText, showTeamPicker,
  sortTeams, teamKeys, teamName, teamNameError, teamPhones, teamSummary, withTeam,
} from "./teams";
import { Store } from "./store";
import type { Agent, Device, Team } from "./types";

const alpha: Team = { id: 3, name: "alpha", members: ["ann", "bob"], agents: 2 };
const beta: Team = { id: 2, name: "beta", members: [], agents: 0 };
const dflt: Team = { id: 1, name: "default", members: ["carl"], agents: 1 };
const agent = {
  id: 7, name: "rack-a", hostname: "pc1", version: "1", status: "online", paused: false, connected: true,
  device_count: 4, last_seen_at: null, created_at: "2026-01-01T00:00:00Z",
} as Agent;

describe("which team a new job or schedule goes to", () => {
  it("asks only someone who can use more than one team", () => {
    expect(showTeamPicker(null)).toBe(false);
    expect(showTeamPicker([alpha])).toBe(false);
    expect(showTeamPicker([alpha, beta])).toBe(true);
    expect(teamKeys([alpha])).toEqual([]); // a hidden picker: the server's word on team_id shows as a general error
    expect(teamKeys([alpha, beta])).toEqual(["team_id"]);
  });
  it("defaults to the only team, else the first made ('default' for an admin)", () => {
    expect(defaultTeamId(null)).toBeNull();
    expect(defaultTeamId([])).toBeNull();
    expect(defaultTeamId([alpha])).toBe(3);
    expect(defaultTeamId([alpha, dflt, beta])).toBe(1);
    expect(sortTeams([alpha, dflt, beta]).map((t) => t.name)).toEqual(["default", "beta", "alpha"]);
  });
  it("sends the picked team, and nothing when none is known (the server decides)", () => {
    const body: { title: string; team_id?: number | null } = { title: "x" };
    expect(withTeam(body, 3)).toEqual({ title: "x", team_id: 3 });
    expect(withTeam(body, null)).toEqual({ title: "x" });
  });
});

describe("the phones a job of a team can run on", () => {
  const phone = (id: number, agent_id: number) => ({ id, agent_id, serial: `p${id}` }) as Device;
  const phones = [phone(1, 7), phone(2, 8), phone(3, 9)];
  it("are its agents' phones", () => {
    const agents = new Map([[7, { ...agent, team_id: 3 } as Agent], [8, { ...agent, id: 8, team_id: 1 } as Agent]]);
    expect(teamPhones(phones, agents, 3).map((d) => d.id)).toEqual([1, 3]); // agent 9 unknown: counted
    expect(teamPhones(phones, agents, 1).map((d) => d.id)).toEqual([2, 3]);
  });
  it("are every phone while the team or the agents' teams are unknown", () => {
    expect(teamPhones(phones, new Map([[7, agent]]), 3)).toHaveLength(3);
    expect(teamPhones(phones, new Map(), null)).toHaveLength(3);
  });
});

describe("team names", () => {
  it("name a team by id, or say its number while unknown", () => {
    expect(teamName([alpha, beta], 2)).toBe("beta");
    expect(teamName([alpha], 9)).toBe("team 9");
    expect(teamName(null, 9)).toBe("team 9");
    expect(teamName([alpha], null)).toBe("");
  });
  it("read an agent's team when the server gives one", () => {
    expect(agentTeamId(agent)).toBeNull();
    expect(agentTeamId({ ...agent, team_id: 3 } as Agent)).toBe(3);
  });
  it("are checked as people's names are", () => {
    expect(teamNameError("qa-berlin")).toBeNull();
    expect(teamNameError("  ")).toBe("Enter a name");
    expect(teamNameError("qa berlin")).toContain("Letters, digits");
    expect(teamNameError("-qa")).toContain("starting with a letter or digit");
    expect(teamNameError("a".repeat(101))).toBe("At most 100 characters");
  });
  it("refuse adding an empty name or a member twice", () => {
    expect(memberNameError("", alpha)).toBe("Enter a person's name");
    expect(memberNameError("ann", alpha)).toBe("ann is already a member of alpha");
    expect(memberNameError(" dora ", alpha)).toBeNull();
  });
  it("sum a team up", () => {
    expect(teamSummary(alpha)).toBe("2 members · 2 agents");
    expect(teamSummary(dflt)).toBe("1 member · 1 agent");
  });
});

describe("confirmations say what will happen", () => {
  it("delete names the members who leave and the agents that stop it", () => {
    expect(deleteTeamText(alpha)).toBe("This deletes team alpha. Its 2 members leave it; their accounts stay. " +
      "It still has 2 agents: move them to another team first, or the server refuses.");
    expect(deleteTeamText(dflt)).toContain("Its 1 member leaves it; their account stays.");
    expect(deleteTeamText(beta)).toBe("This deletes team beta. A team that still owns jobs or schedules cannot be " +
      "deleted: the server says so.");
  });
  it("removing a member says what they stop seeing", () => {
    expect(removeMemberText("ann", alpha)).toBe("ann stops seeing team alpha's jobs, phones and schedules at once " +
      "(their own account and other teams stay).");
  });
  it("moving an agent names its phones and both teams", () => {
    expect(moveAgentText(agent, "default", "alpha")).toBe("This moves agent rack-a and its 4 connected phones from " +
      "team default to team alpha. From now on its phones run only team alpha's jobs, and only alpha's people see " +
      "them; runs already running finish where they are.");
    expect(moveAgentText({ ...agent, device_count: 1 }, null, "beta")).toContain("its 1 connected phone to team beta.");
  });
});

describe("the store's teams", () => {
  it("keeps them oldest first, replacing one the server answered a change to, and dropping a deleted one", () => {
    const store = new Store(100, () => {});
    expect(store.teams).toBeNull();
    store.setTeams([alpha, dflt]);
    store.putTeam({ ...alpha, name: "alpha-2" });
    store.putTeam(beta);
    expect(store.teams?.map((t) => t.name)).toEqual(["default", "beta", "alpha-2"]);
    store.teamDeleted(2);
    expect(store.teams?.map((t) => t.id)).toEqual([1, 3]);
  });
  it("learns of an agent's move from agent:update, and says so (the teams' counts changed)", () => {
    const store = new Store(100, () => {});
    store.replaceAgents([{ ...agent, team_id: 1 }]);
    const update = { agent_id: 7, name: "rack-a", status: "online", paused: false, connected: true, team_id: 1 };
    expect(store.agentUpdate(update)).toBe(false);
    expect(store.agentUpdate({ ...update, team_id: 3 })).toBe(true);
    expect(store.agents.get(7)?.team_id).toBe(3);
    expect(store.agentUpdate({ ...update, agent_id: 99 })).toBe(false); // unknown: the next refresh lists it
  });
});
