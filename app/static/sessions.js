// The sessions list (/sessions): save a session's title (PATCH /api/sessions/ID) and delete a
// session after a confirmation (DELETE /api/sessions/ID; the service refuses one with a queued
// or running run, and says why).

import { api, say } from './common.js';

for (const form of document.querySelectorAll('[data-testid="title-form"]')) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = form.elements.namedItem('title');
    try {
      const session = await api('PATCH', `/api/sessions/${form.closest('tr').dataset.session}`, { title: input.value });
      input.value = session.title;
      input.defaultValue = session.title;
      say(`Title saved for session ${session.id}.`, 'info');
    } catch (error) {
      say(`Title not saved: ${error.message}`);
    }
  });
}

for (const button of document.querySelectorAll('[data-testid="delete-session"]')) {
  button.addEventListener('click', async () => {
    const id = button.closest('tr').dataset.session;
    const name = button.dataset.title ? `"${button.dataset.title}" (${id})` : id;
    if (!window.confirm(`Delete session ${name} with its regions, runs and products? This cannot be undone.`)) return;
    try {
      await api('DELETE', `/api/sessions/${id}`);
      button.closest('tr').remove();
      say(`Session ${name} deleted.`, 'info');
    } catch (error) {
      say(`Not deleted: ${error.message}`);
    }
  });
}

document.body.dataset.ready = 'true';
