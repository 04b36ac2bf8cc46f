import type { Team } from "../types";
import { showTeamPicker } from "../teams";
import { describedBy, FieldError } from "./Dialog";

/** The team a new job or schedule belongs to: asked only of someone who can use more than one (the server's 422
 * about it shows beside it, under the key ``team_id``). */
export function TeamPicker({ teams, value, onChange, errors }: {
  teams: Team[] | null; value: number | null; onChange: (id: number) => void; errors: Record<string, string>;
}) {
  if (!teams || !showTeamPicker(teams)) return null;
  return (
    <div class="team-field">
      <label for="team_id">Team <span class="muted">(its phones run it; its people see it)</span></label>
      <select id="team_id" value={value ?? undefined} data-testid="team-picker"
        onChange={(e) => onChange(Number((e.target as HTMLSelectElement).value))} {...describedBy(errors, "team_id")}>
        {teams.map((t) => <option key={t.id} value={t.id}>{t.name}</option>)}
      </select>
      <FieldError id="team_id" message={errors.team_id} />
    </div>
  );
}
