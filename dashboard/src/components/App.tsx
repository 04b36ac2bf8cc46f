import { useEffect, useMemo, useState } from "preact/hooks";
import { Api, currentSession, roleAtLeast } from "../api";
import type { SessionInfo } from "../generated/protocol";
import { useHash, useStore } from "../hooks";
import { Live } from "../live";
import { Store } from "../store";
import { parsePhoneFilter } from "../fleetHealth";
import { AuditPage } from "./AuditPage";
import { FleetGrid } from "./FleetGrid";
import { JobDetail } from "./JobDetail";
import { JobsPage } from "./JobsPage";
import { PhoneDetail } from "./PhoneDetail";
import { PhonesPage } from "./PhonesPage";
import { SchedulerBanner, SchedulerControl } from "./SchedulerControl";
import { SchedulesPage } from "./SchedulesPage";
import { AccountPage } from "./AccountPage";
import { SignIn } from "./SignIn";
import { TeamsPage } from "./TeamsPage";
import { ThemeToggle } from "./ThemeToggle";

export function App() {
  // undefined: still asking the server whether this browser's cookie holds a session.
  const [session, setSession] = useState<SessionInfo | null | undefined>(undefined);
  const [notice, setNotice] = useState<string | null>(null);
  useEffect(() => {
    currentSession().then(setSession, (e: Error) => {
      setNotice(`Cannot reach the server: ${e.message}`);
      setSession(null);
    });
  }, []);
  if (session === undefined) return <main class="signin" aria-busy="true" />;
  if (!session) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={(s) => {
          setNotice(null);
          setSession(s);
        }}
      />
    );
  }
  return (
    <Dashboard
      key={session.csrf_token ?? session.name}
      session={session}
      onSignOut={(why) => {
        setNotice(why);
        setSession(null);
      }}
    />
  );
}

function Dashboard({ session, onSignOut }: { session: SessionInfo; onSignOut: (why: string | null) => void }) {
  const { api, store, live } = useMemo(() => {
    const api = new Api(session);
    const store = new Store();
    return { api, store, live: new Live(api, store) };
  }, [session]);
  const [toast, setToast] = useState<string | null>(null);
  async function signOut() {
    try {
      await api.signOut();
    } catch {
      // the session already ended (or the server is away): the page signs out all the same
    }
    onSignOut(null);
  }
  useEffect(() => {
    api.onUnauthorized(() => onSignOut("Your session ended: sign in again."));
    live.onPause = (p) => {
      if (p.source !== "agent") return;
      const what = p.scope === "device" ? `phone ${p.serial}` : p.scope === "job" ? `job ${p.job_id}` : "the agent";
      setToast(`${p.paused ? "Paused" : "Resumed"} at PC ${p.agent_name ?? "?"} by operator: ${what}`);
    };
    live.start();
    return () => live.stop();
  }, [api, live]);
  useEffect(() => {
    if (!toast) return;
    const t = setTimeout(() => setToast(null), 6000);
    return () => clearTimeout(t);
  }, [toast]);
  useStore(store);
  const hash = useHash();
  const detail = /^#\/jobs\/(\d+)/.exec(hash);
  const phone = /^#\/phones\/(\d+)/.exec(hash);
  const page = detail ? "detail" : phone ? "phone" : hash.startsWith("#/phones") ? "phones"
    : hash.startsWith("#/grid") ? "grid"
    : hash.startsWith("#/schedules") ? "schedules"
    : hash.startsWith("#/teams") ? "teams"
    : hash.startsWith("#/audit") ? "audit" : hash.startsWith("#/account") ? "account" : "jobs";
  const [menu, setMenu] = useState(false);
  useEffect(() => setMenu(false), [hash]);
  const show = parsePhoneFilter(new URLSearchParams(hash.split("?")[1] ?? "").get("show"));

  return (
    <div class={`shell${store.link === "offline" ? " stale" : ""}`} data-link={store.link}>
      <header class={`topbar${menu ? " open" : ""}`}>
        <span class="brand">phonefleet</span>
        <button type="button" class="ghost menu-toggle" aria-expanded={menu} aria-controls="topbar-nav"
          onClick={() => setMenu(!menu)} data-testid="menu-toggle">
          <span aria-hidden="true">☰</span><span class="sr-only">Menu</span>
        </button>
        <nav aria-label="Pages" id="topbar-nav">
          <a href="#/jobs" aria-current={page === "jobs" || page === "detail" ? "page" : undefined}>Jobs</a>
          <a href="#/phones" aria-current={page === "phones" || page === "phone" ? "page" : undefined}>Phones</a>
          <a href="#/grid" aria-current={page === "grid" ? "page" : undefined}>Grid</a>
          <a href="#/schedules" aria-current={page === "schedules" ? "page" : undefined}>Schedules</a>
          <a href="#/teams" aria-current={page === "teams" ? "page" : undefined}>Teams</a>
          {roleAtLeast(session.role, "admin") && (  /* the trail is the admins' (GET /api/audit) */
            <a href="#/audit" aria-current={page === "audit" ? "page" : undefined}>Audit</a>
          )}
        </nav>
        <SchedulerControl api={api} store={store} />
        <span class={`link link-${store.link}`} data-testid="link-state" role="status">
          {store.link === "live" ? "Live" : store.link === "connecting" ? "Connecting…" : "Offline"}
        </span>
        <ThemeToggle />
        <a href="#/account" class="who" data-testid="signed-in-as" title="Your account and personal tokens"
          aria-current={page === "account" ? "page" : undefined}>
          {session.name} <span class={`role role-${session.role}`}>{session.role}</span>
        </a>
        <button type="button" class="ghost signout" onClick={() => void signOut()}>Sign out</button>
      </header>
      {store.link === "offline" && (
        <div class="banner" role="alert" data-testid="offline-banner">
          Offline since {new Date(store.offlineSince ?? Date.now()).toLocaleTimeString()}, retrying. The live
          connection is lost: figures are greyed and show that moment until it comes back.
          {store.lastSync && store.offlineSince && store.lastSync > store.offlineSince &&
            ` Last refresh ${new Date(store.lastSync).toLocaleTimeString()}.`}
        </div>
      )}
      <SchedulerBanner store={store} />
      {toast && <div class="toast" role="status" data-testid="toast">{toast}</div>}
      <main>
        {page === "jobs" && <JobsPage api={api} store={store} />}
        {page === "phones" && <PhonesPage key={show} api={api} store={store} initialFilter={show} />}
        {page === "phone" && phone && <PhoneDetail key={phone[1]} api={api} store={store} deviceId={Number(phone[1])} />}
        {page === "grid" && <FleetGrid api={api} store={store} />}
        {page === "schedules" && (
          <SchedulesPage api={api} store={store} onChanged={() => void live.refreshScheduler()} />
        )}
        {page === "teams" && <TeamsPage api={api} store={store} onAgentsChanged={() => void live.refreshAgents()} />}
        {page === "audit" && <AuditPage api={api} />}
        {page === "detail" && detail && <JobDetail api={api} store={store} jobId={Number(detail[1])} />}
        {page === "account" && <AccountPage api={api} />}
      </main>
    </div>
  );
}
